"""Fixtures of the lossy-link tests: links whose teardown always ends their
programs, stops the relay and deletes the namespaces; TLS files for the
link's server address; a summary of the runs on the terminal."""

from __future__ import annotations

from typing import Any, Callable, Iterator, List

import pytest

from ..net_fixtures import require_trustme
from . import link as lossy
from .relay import Impairments
from .scenarios import TLSFiles


def _require_link() -> None:
    reason = lossy.unavailable()
    if reason is not None:  # skip_reason() let the module run: it must
        pytest.fail(f"{reason}; FRAMECODEC_LOSSY={lossy.MODE!r} (or CI) says these tests must run")


@pytest.fixture
def make_link() -> Iterator[Callable[..., lossy.LossyLink]]:
    """make_link(impairments, rate=...): a LossyLink closed after the test."""
    links: List[lossy.LossyLink] = []

    def make(impairments: Impairments, **options: Any) -> lossy.LossyLink:
        _require_link()
        made = lossy.LossyLink(impairments, **options)
        links.append(made)
        return made

    yield make
    while links:
        links.pop().close()


@pytest.fixture(scope="session")
def lossy_tls(tmp_path_factory: Any) -> TLSFiles:
    """A CA and a server certificate for the link's server address."""
    ca = require_trustme().CA()
    cert = ca.issue_cert(lossy.SERVER_ADDRESS)
    directory = tmp_path_factory.mktemp("lossy-pki")
    files = TLSFiles(
        cert=str(directory / "cert.pem"),
        key=str(directory / "key.pem"),
        ca=str(directory / "ca.pem"),
    )
    cert.cert_chain_pems[0].write_to_path(files.cert)
    cert.private_key_pem.write_to_path(files.key)
    ca.cert_pem.write_to_path(files.ca)
    return files


REPORT: List[str] = []


@pytest.fixture
def lossy_report() -> List[str]:
    """Lines shown at the end of the terminal summary (throughput, errors)."""
    return REPORT


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("lossy links")
        for line in REPORT:
            terminalreporter.write_line(line)
