"""Who may read the dashboard: whoever holds the cluster's token.

The token comes with the URL (``?token=``, as Jupyter's), is then kept in a
cookie (HttpOnly, SameSite=Strict), or comes in an ``Authorization: Bearer``
header from scripts. Tokens are compared in constant time.
"""
import hmac
import os
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from ..transport.auth import TOKEN_ENV

UNAUTHORIZED_HINT = ("401 Unauthorized: this zray dashboard needs the cluster's token. Open the "
                     "URL that ray.get_webui_url() (or `zray start --head`) gives: it ends in "
                     "?token=...")


def cluster_token():
    """The secret the dashboard asks for: the cluster's own token, which the
    dashboard process gets by environment as every daemon does."""
    return os.environ.pop(TOKEN_ENV, "")


def cookie_name(port):
    # Cookies ignore ports: two clusters on one host must not share one.
    return f"zray_dashboard_{port}"


def cookie_value(token):
    # The browser keeps a digest of the token, not the token (which may be
    # the cluster password) itself; any password is then a valid cookie value.
    return hmac.new(token.encode(), b"zray dashboard cookie", "sha256").hexdigest()


def check(expected, query, headers, port):
    """(authorized, token came in the URL) for one request."""
    values = parse_qs(query).get("token")
    if values:
        return _same(expected, values[0]), True
    authorization = headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return _same(expected, authorization[len("Bearer "):].strip()), False
    try:
        morsel = SimpleCookie(headers.get("Cookie", "")).get(cookie_name(port))
    except CookieError:
        return False, False
    return morsel is not None and _same(cookie_value(expected), morsel.value), False


def _same(expected, given):
    return hmac.compare_digest(expected.encode(), given.encode())


def set_cookie_header(token, port):
    return f"{cookie_name(port)}={cookie_value(token)}; Path=/; HttpOnly; SameSite=Strict"
