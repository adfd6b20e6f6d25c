"""What receiving and delivering both know of a mail, apart from either.

    headers.py     the header block: split, fields, removing fields, no MIME parsing
    addresses.py   address validation (RFC 5321, RFC 6531) and DSN NOTIFY words
    status.py      enhanced status codes (RFC 3463)
    data.py        a DATA transfer's content: dot-stuffing undone, CRLF line ends
"""
