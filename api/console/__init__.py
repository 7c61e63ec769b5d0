"""The web console: the developer portal (`/console`) and the admin console (`/console/admin`).

Server-rendered pages (Jinja2, htmx for small touches) mounted on the gateway's app. They
hold no logic of their own: each page calls what the matching API route calls.

- `app`:            the mounted sub-application: middleware, error pages, static files.
- `session`:        one request's session and its signed cookie (the session id).
- `session_store`:  the session's row: loaded for every page, written at sign-in and out.
- `context`:        what the console holds per app and per request.
- `middleware`:     session in; Content-Security-Policy, security headers and cookie out.
- `csrf`:           per-session tokens on every form; POSTs without one are refused (403).
- `deps`:           the signed-in developer or admin, re-checked against the database.
- `errors`:         typed errors as HTML pages (same statuses as the API); sign-in redirects.
- `render`:         templates, filters, `page()` and `redirect()`.
- `forms`:          HTML forms into the API's own request schemas.
- `charts`:         bar charts as server-side SVG geometry.
- `months`:         calendar helpers for the usage pages.
- `paging`:         long lists a page at a time (offset, previous/next links).
- `portal_access`:  home, apply, application status, claim the first key, sign in/out.
- `portal_pages`:   keys, usage, playground, docs.
- `admin_access`:   admin sign in/out, dashboard.
- `admin_pages`:    waitlist queue, accounts (keys, tier, caps, suspension).
- `admin_billing`:  tiers and prices, usage reports and CSV, invoices, audit log.

`templates/` holds the pages, `static/` the stylesheet, two small scripts and vendored htmx
(`static/vendor/htmx/`, with its version and licence).
"""
