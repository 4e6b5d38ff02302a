"""The returnUrl allowlist (API.md "returnUrl allowlist — exact host match"): a malformed URL is 422
VALIDATION, a well-formed URL whose host is not listed is 403 RETURN_URL_NOT_ALLOWED, and no suffix,
prefix, user-info, backslash, encoding or look-alike trick gets an attacker's host through."""

import pytest

from accounts.services import normalize_allowlist
from config.api.errors import ReturnUrlNotAllowed, Validation
from config.api.returnurl import check_return_url

ALLOWLIST = ["app.acme.test", "app.acme.test:8443", "localhost:3000", "127.0.0.1", "xn--bcher-kva.test"]


@pytest.fixture(autouse=True)
def _http_localhost_allowed(settings):
    settings.LAYERS_ALLOW_HTTP_LOCALHOST_RETURN = True


@pytest.mark.parametrize(
    "url",
    [
        "https://app.acme.test/",
        "https://app.acme.test",
        "https://app.acme.test/oauth/done?user=42&x=%20y",
        "https://app.acme.test?x=1",
        "https://APP.Acme.TEST/Done",  # hosts compare lower-cased
        "HTTPS://app.acme.test/",
        "https://app.acme.test:443/",  # :443 is no port
        "https://app.acme.test:/",  # empty port is the default port
        "https://app.acme.test:8443/cb",  # listed as host:port
        "https://127.0.0.1/",
        "http://localhost:3000/cb",  # plain http only for a listed local host
        "https://xn--bcher-kva.test/",  # a real IDN, ASCII form
        "https://bücher.test/",  # ... and its unicode form
        "https://BÜCHER.test/",
    ],
)
def test_allowed_urls_are_returned_unchanged(url):
    assert check_return_url(url, allowlist=ALLOWLIST) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://app.acme.test.evil.com/",  # allowed host as a prefix
        "https://evilapp.acme.test/",  # as a suffix
        "https://acme.test/",  # the parent domain
        "https://sub.app.acme.test/",  # a subdomain
        "https://www.app.acme.test/",
        "https://evil.com/?next=https://app.acme.test/",
        "https://evil.com?@app.acme.test/",  # @ in the query, not in the authority: host is evil.com
        "https://evil.com/app.acme.test",
        "https://\u0430pp.acme.test/",  # Cyrillic 'а' look-alike → xn--pp-6kc.acme.test
        "https://app.acme.test:8444/",  # port not listed
        "https://app.acme.test:80/",  # :80 is not https's default port
        "https://localhost/",  # only localhost:3000 is listed
        "http://localhost:3001/",
        "http://127.0.0.1:3000/",  # localhost:3000 is listed, not 127.0.0.1:3000
        "https://127.0.0.2/",
        "https://0x7f.0.0.1/",
        "https://bucher.test/",
    ],
)
def test_well_formed_url_of_an_unlisted_host_is_403(url):
    with pytest.raises(ReturnUrlNotAllowed) as caught:
        check_return_url(url, allowlist=ALLOWLIST)
    assert caught.value.status == 403 and caught.value.code == "RETURN_URL_NOT_ALLOWED"


@pytest.mark.parametrize(
    "url",
    [
        "https://app.acme.test@evil.com/",  # user-info: the real host is evil.com
        "https://user:pass@app.acme.test/",  # user-info on an allowed host is still refused
        "https://app.acme.test:443@evil.com/",
        "https://evil.com\\@app.acme.test",  # browsers read \ as /
        "https:\\\\app.acme.test\\",
        "https://app.acme.test\\.evil.com/",
        "//app.acme.test/x",  # scheme-relative
        "https:/app.acme.test",
        "https:app.acme.test",
        "https:///app.acme.test",
        "https://",
        "https://:443/",
        "app.acme.test/x",
        "/oauth/done",
        "javascript:alert(1)",
        "JavaScript://app.acme.test/%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "ftp://app.acme.test/",
        "file:///etc/passwd",
        "http://app.acme.test/",  # plain http for a non-local host
        "https://app.acme.test./",  # trailing dot
        "https://app.acme.test/cb#token",  # fragments are refused
        "https://app.acme.test/#",
        "https://evil.com#@app.acme.test",
        " https://app.acme.test/",
        "https://app.acme.test/ ",
        "https://app.acme.test/a b",
        "https://app.acme.\ttest/",
        "https://app.acme.test/\n",
        "https://app.acme.test\r\n/",
        "https://app.acme.test/\x00",
        "https://app.acme.test/\x7f",
        "https://app%2Eacme.test/",  # percent-encoded host
        "https://%61pp.acme.test/",
        "https://app.acme.test%00.evil.com/",
        "https://app.acme.test:99999/",
        "https://app.acme.test:abc/",
        "https://[::1]/",
        "https://*.acme.test/",
        "https://evil.com;app.acme.test/",
        "https://2130706433/",  # decimal IPv4
        "https://app.acme.test/" + "a" * 2100,  # overlong
        "",
    ],
)
def test_malformed_url_is_422(url):
    with pytest.raises(Validation) as caught:
        check_return_url(url, allowlist=ALLOWLIST)
    assert caught.value.status == 422 and caught.value.code == "VALIDATION"
    assert list(caught.value.details["fields"]) == ["returnUrl"]


@pytest.mark.parametrize("value", [None, 42, b"https://app.acme.test/", ["https://app.acme.test/"], {"url": 1}])
def test_non_string_is_422(value):
    with pytest.raises(Validation):
        check_return_url(value, allowlist=ALLOWLIST)


def test_the_error_names_the_field_given():
    with pytest.raises(Validation) as caught:
        check_return_url("ftp://x", allowlist=ALLOWLIST, field="returnUrl2")
    assert list(caught.value.details["fields"]) == ["returnUrl2"]


def test_url_of_2048_characters_is_still_accepted():
    url = "https://app.acme.test/" + "a" * (2048 - len("https://app.acme.test/"))
    assert len(url) == 2048
    assert check_return_url(url, allowlist=ALLOWLIST) == url


def test_empty_allowlist_allows_nothing():
    with pytest.raises(ReturnUrlNotAllowed):
        check_return_url("https://app.acme.test/", allowlist=[])


def test_http_localhost_is_refused_when_the_deployment_does_not_allow_it(settings):
    settings.LAYERS_ALLOW_HTTP_LOCALHOST_RETURN = False
    with pytest.raises(Validation):
        check_return_url("http://localhost:3000/cb", allowlist=ALLOWLIST)
    with pytest.raises(Validation):
        check_return_url("http://127.0.0.1/cb", allowlist=ALLOWLIST)
    # https to a listed local host is unaffected
    assert check_return_url("https://127.0.0.1/cb", allowlist=ALLOWLIST)


def test_http_localhost_needs_its_port_listed():
    with pytest.raises(ReturnUrlNotAllowed):
        check_return_url("http://localhost:3000/", allowlist=["localhost"])
    assert check_return_url("http://localhost/", allowlist=["localhost"])
    assert check_return_url("http://localhost:80/", allowlist=["localhost"])  # :80 is http's default


def test_the_403_message_names_the_refused_host_with_its_port():
    with pytest.raises(ReturnUrlNotAllowed) as caught:
        check_return_url("https://App.Evil.test:9000/x", allowlist=ALLOWLIST)
    assert "app.evil.test:9000" in caught.value.message


# --- normalize_allowlist: what staff save on a key --------------------------------------------------


def test_allowlist_entries_are_lower_cased_idna_encoded_and_deduplicated():
    entries = ["App.Acme.test", "foo.test:8443", " app.acme.test ", "bücher.test", "LOCALHOST:3000", "127.0.0.1"]
    assert normalize_allowlist(entries) == [
        "app.acme.test",
        "foo.test:8443",
        "xn--bcher-kva.test",
        "localhost:3000",
        "127.0.0.1",
    ]


def test_allowlist_entry_with_default_https_port_equals_the_bare_host():
    # A URL on :443 is checked as the bare host, so an entry saved as host:443 would never match anything.
    assert normalize_allowlist(["app.acme.test:443", "app.acme.test"]) == ["app.acme.test"]
    assert check_return_url("https://app.acme.test/", allowlist=normalize_allowlist(["app.acme.test:443"]))


def test_allowlist_entries_keep_a_non_default_port_and_drop_leading_zeros():
    assert normalize_allowlist(["app.acme.test:08443"]) == ["app.acme.test:8443"]


@pytest.mark.parametrize(
    "entry",
    [
        "https://x.test/path",
        "http://x.test",  # plain http: local hosts only
        "x.test/path",
        "*.acme.test",
        "x.test:0",
        "x.test:70000",
        "x.test:",
        "x.test:https",
        "app.acme.test.",
        "a b.test",
        "user@x.test",
        "x%2e.test",
        "",
    ],
)
def test_invalid_allowlist_entry_raises_value_error_naming_it(entry):
    with pytest.raises(ValueError) as caught:
        normalize_allowlist(["ok.test", entry])
    assert repr(entry)[1:-1] in str(caught.value)


@pytest.mark.parametrize(
    "entry, reason",
    [
        ("*.acme.test", "no wildcards"),
        ("app.acme.test/", "only the host"),
        ("app.acme.test/oauth/done", "only the host"),
        ("app.acme.test:8443/done", "only the host"),
        ("https://app.acme.test/oauth/done", "only the scheme, host and port"),
        ("app.acme.test.", "no trailing dot"),
        ("a b.test", "not a valid hostname"),
    ],
)
def test_an_allowlist_entry_is_refused_with_a_reason_staff_can_act_on(entry, reason):
    """What ops type when a partner asks for "*.acme.com" or pastes its returnUrl: the reason was the IDNA
    library's ("Codepoint U+002A at position 1 of '*' not allowed") or "not an http(s) origin" for an https
    URL, which sent staff guessing."""
    with pytest.raises(ValueError) as caught:
        normalize_allowlist([entry])
    assert reason in str(caught.value), str(caught.value)
    assert "Codepoint" not in str(caught.value)


# --- an entry written with its port: the port is compared, not the text ---------------------------------


@pytest.mark.parametrize(
    "entry, allowed, refused",
    [
        # Listed with https's default port (as pasted from a browser's address bar or a config file).
        (
            "app.example.test:443",
            ["https://app.example.test/cb", "https://app.example.test:443/cb"],
            ["https://app.example.test:8443/cb", "https://app.example.test:80/cb"],
        ),
        (
            "https://App.Example.test:443",
            ["https://app.example.test/cb", "https://app.example.test:443/cb"],
            ["https://app.example.test:8443/cb"],
        ),
        # Listed with http's default port: a local dev server on :80.
        (
            "localhost:80",
            ["http://localhost/cb", "http://localhost:80/cb", "https://localhost:80/cb"],
            ["https://localhost/cb", "http://localhost:3000/cb"],
        ),
        (
            "http://localhost:80",
            ["http://localhost/cb", "http://localhost:80/cb"],
            ["https://localhost/cb", "http://localhost:8080/cb"],
        ),
        # An origin without a port has its scheme's: https://localhost is port 443, not http's 80.
        ("https://localhost", ["https://localhost/cb", "https://localhost:443/cb"], ["http://localhost/cb"]),
        ("http://127.0.0.1", ["http://127.0.0.1/cb", "http://127.0.0.1:80/"], ["https://127.0.0.1/cb"]),
        # A non-default port still matches that port only.
        ("https://app.example.test:8443/", ["https://app.example.test:8443/cb"], ["https://app.example.test/cb"]),
    ],
)
def test_an_entry_listed_with_a_port_matches_exactly_that_port_written_or_implied(entry, allowed, refused):
    allowlist = normalize_allowlist([entry])
    for url in allowed:
        assert check_return_url(url, allowlist=allowlist) == url, (entry, allowlist, url)
    for url in refused:
        with pytest.raises(ReturnUrlNotAllowed):
            check_return_url(url, allowlist=allowlist)


def test_one_origin_is_stored_as_one_entry_however_it_is_written():
    assert normalize_allowlist(
        ["https://App.Example.test:443", "app.example.test", "https://app.example.test/", "APP.example.test:443"]
    ) == ["app.example.test"]
    assert normalize_allowlist(["http://localhost:80", "localhost:80", "http://LOCALHOST"]) == ["localhost:80"]
    assert normalize_allowlist(["https://bücher.test:8443"]) == ["xn--bcher-kva.test:8443"]


@pytest.mark.parametrize(
    "entry",
    [
        "http://app.example.test",  # plain http is only ever allowed for a local host
        "ftp://app.example.test",
        "https://app.example.test/cb",
        "https://app.example.test?x=1",
        "https://app.example.test#x",
        "https://user@app.example.test",
        "https://",
        "https:app.example.test",
        "//app.example.test",
        "https://app.example.test:0",
    ],
)
def test_an_origin_entry_with_more_than_scheme_host_and_port_is_refused(entry):
    with pytest.raises(ValueError) as caught:
        normalize_allowlist([entry])
    assert repr(entry)[1:-1] in str(caught.value)
