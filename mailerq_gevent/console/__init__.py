"""The management console (SPEC §9, seed 003): a Bottle app served inside the daemon.

    app.py        the app factory, the HTTP(S) server, templates and static files
    security.py   sessions from cookies, API tokens, CSRF and origin checks, headers
    sessions.py   server-side sessions and the failed-login throttle
    pages.py      login, logout, the overview page
    api.py        the JSON API: statistics, queues, reload, pause, inject
    tables.py     the editors of the configuration tables, DKIM keys
    live.py       the live view of SMTP conversations
    render.py     a message's raw MIME and its HTML in a sandbox
"""
