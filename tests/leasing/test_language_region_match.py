"""Which pool accounts suit a lease request's language (API.md / leasing/apis.py: "With a region, only
accounts of that region are assigned automatically ... Without a region, any region of the language
suits"). An account tagged with the bare language (`en`, region unknown) is not known to be of the region
an `en-US` request asks for: it may be offered for a person's pick, never auto-assigned."""

import pytest

from leasing.services import language_match


@pytest.mark.parametrize(
    ("requested", "offered", "expected"),
    [
        ("en-US", ["en-US"], "exact"),
        ("en-US", ["en-GB"], "region"),
        ("en-US", ["en"], "region"),  # region unknown: not auto-assigned to a request naming one
        ("en", ["en-GB"], "exact"),  # no region asked: any region of the language suits
        ("en", ["en"], "exact"),
        ("en-US", ["fr-US"], None),
    ],
)
def test_the_region_a_request_names_must_be_the_accounts(requested, offered, expected):
    assert language_match(requested, offered) == expected
