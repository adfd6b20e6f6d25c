"""MailerQ's management console: a Bottle app served inside the daemon.

    app.py        the app factory and the HTTP(S) server
    templates.py  what the routes are given (Context) and how pages are rendered
    answers.py    JSON answers and refusals (ApiError, json_route)
    request_body.py  reading a JSON request body, bounded in size and time
    security.py   sessions from cookies, API tokens, CSRF and origin checks, headers
    sessions.py   server-side sessions and the failed-login throttle
    pages.py      login, logout, the overview page
    api.py        the JSON API: statistics, queues, reload, pause, inject
    charts.py     the SQL behind the charts (deliveries_* per minute, top lists)
    tables.py     the editors of the configuration tables: routes and API
    table_rows.py each table's columns and checks (the loader's rules, and more)
    table_store.py  reading and writing rows (one transaction per change)
    table_pages.py  how rows and forms are shown
    dkim_records.py DKIM keys: generation, the TXT record to publish
    live.py       the live view of SMTP conversations
    render.py     a message's raw MIME and its HTML in a sandbox
"""
