"""Suite-wide settings: nothing in the test suite reaches another host.

Set before any test module imports vdna or huggingface_hub (which reads its environment on import),
and inherited by the subprocesses the tests start (CLI, examples, notebooks):

- ``VDNA_OFFLINE=1``: vdna never downloads; the download tests lift it for their local server only;
- huggingface_hub: no telemetry, no implicit token, no progress bars, its home (token, cache) in a
  temporary folder, and ``HF_ENDPOINT`` on a loopback port where nothing listens;
- in this process, connecting to (or resolving) any host other than the loopback interface fails the
  test that tried.
"""
import ipaddress
import os
import shutil
import socket
import tempfile

import pytest

_HF_HOME = tempfile.mkdtemp(prefix="vdna-tests-hf-")
os.environ["VDNA_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: connections are refused
for _name in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_HUB_DISABLE_PROGRESS_BARS",
              "DO_NOT_TRACK"):
    os.environ[_name] = "1"
for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
    os.environ.pop(_name, None)


def _is_loopback(host) -> bool:
    if host is None or host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_loopback(host.decode() if isinstance(host, bytes) else host):
        raise OSError(f"the test suite must not reach another host (name lookup of {host!r})")
    return _real_getaddrinfo(host, *args, **kwargs)


def _check_address(address):
    if isinstance(address, tuple) and not _is_loopback(address[0]):
        raise OSError(f"the test suite must not reach another host (connect to {address!r})")


def _guarded_connect(self, address):
    _check_address(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check_address(address)
    return _real_connect_ex(self, address)


socket.getaddrinfo = _guarded_getaddrinfo
socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex


@pytest.fixture(scope="session", autouse=True)
def _remove_hf_home():
    yield
    shutil.rmtree(_HF_HOME, ignore_errors=True)
