"""``hmq dashboard``: a local web app showing the user's tags and, with the admin key, the fleet.

- :mod:`hmq.dashboard.command`: the click command (binds 127.0.0.1, prints the URL with its
  token, serves under uvicorn until Ctrl-C);
- :mod:`hmq.dashboard.app`: the Starlette app, its guard (token, Host, Origin) and pages;
- :mod:`hmq.dashboard.board`: what the pages show, fetched with the user's own client;
- :mod:`hmq.dashboard.screenshots`: the documentation's screenshots, from a real local queue.

Needs the ``dashboard`` extra (Starlette, uvicorn, Jinja2); importing this package needs nothing.
"""
