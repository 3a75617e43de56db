"""zsc_server.admin_api: which APIs the launcher restricts, and the warm-up's secret check. Over a real
server: tests/integration/test_exposure.py."""

from __future__ import annotations

import json

import pytest

from zsc_server.admin_api import ADMIN_HEADER, ADMIN_KEY_ENV, ADMIN_PARAMETER, request_is_admin, restriction_flags


def test_every_api_inference_does_not_need_is_restricted_on_both_protocols():
    value = f"shared-memory,logging,trace,statistics,model-repository:{ADMIN_HEADER}=s3cret"
    assert restriction_flags("s3cret") == (f"--http-restricted-api={value}", f"--grpc-restricted-protocol={value}")


def test_opened_apis_are_left_out_and_unknown_ones_named():
    [http, _] = restriction_flags("k", ("statistics", "shared-memory"))
    assert http == f"--http-restricted-api=logging,trace,model-repository:{ADMIN_HEADER}=k"
    assert restriction_flags("k", ("shared-memory", "logging", "trace", "statistics", "model-repository")) == ()
    with pytest.raises(ValueError, match="unknown API inference"):
        restriction_flags("k", ("inference",))


@pytest.mark.parametrize(("parameters", "environ", "admin"), [
    (json.dumps({ADMIN_PARAMETER: "s3cret"}), {ADMIN_KEY_ENV: "s3cret"}, True),
    (json.dumps({ADMIN_PARAMETER: "guess"}), {ADMIN_KEY_ENV: "s3cret"}, False),
    (json.dumps({ADMIN_PARAMETER: ""}), {}, False),  # a server started without a secret has no admin
    (json.dumps({ADMIN_PARAMETER: 7}), {ADMIN_KEY_ENV: "7"}, False),
    ("{}", {ADMIN_KEY_ENV: "s3cret"}, False),
    ("not json", {ADMIN_KEY_ENV: "s3cret"}, False),
    ("[1]", {ADMIN_KEY_ENV: "s3cret"}, False),
    (None, {ADMIN_KEY_ENV: "s3cret"}, False),
])
def test_a_request_is_the_launchers_only_with_the_servers_secret(parameters, environ, admin):
    assert request_is_admin(parameters, environ) is admin
