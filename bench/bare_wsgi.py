"""The floor for P14: a WSGI app that answers one line, for one bare gunicorn to serve.

Also its gunicorn configuration (`-c python:bench.bare_wsgi`), so gunicorn.conf.py in the project root is
not read: no control socket in $HOME.
"""

control_socket_disable = True


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
