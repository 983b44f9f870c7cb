"""``quantcrew-server --mcp-stdio``: the tools over a child's pipes, with nothing but the protocol on stdout."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client

from quantcrew.ml_server.mcp_server.catalog import CATALOG
from quantcrew.ml_server.mcp_server.stdio import _protocol_channel

pytestmark = pytest.mark.integration


def _child_env(home: Path) -> dict[str, str]:
    env = {**get_default_environment(), "QUANTCREW_HOME": str(home), "QUANTCREW_SERVER__PRELOAD": "false",
           "QUANTCREW_SERVER__DEVICE": "cpu", "QUANTCREW_SERVER__LOG_LEVEL": "info"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


async def test_stdio_serves_the_tools_and_answers_like_rest(tmp_path: Path, rest: httpx.Client) -> None:
    home = tmp_path / "home"
    rng = np.random.default_rng(5)
    request: dict[str, Any] = {"data": {"columns": ["SPX"], "values": (rng.normal(0, 0.01, (250, 1))).tolist()},
                               "levels": [0.99], "methods": ["historical"]}
    params = StdioServerParameters(command=sys.executable, args=["-m", "quantcrew.ml_server", "--mcp-stdio"],
                                   env=_child_env(home), cwd=str(tmp_path))
    try:
        with open(tmp_path / "stderr.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as client:
                await client.initialize()
                names = [tool.name for tool in (await client.list_tools()).tools]
                result = await client.call_tool("risk_var", request)
                refused = await client.call_tool("jobs_get", {"job_id": "no-such-job"})
    except Exception as exc:  # the child's stderr says why it stopped
        raise AssertionError(f"the stdio server failed; its stderr ends with:\n"
                             f"{(tmp_path / 'stderr.log').read_text()[-3000:]}") from exc
    log = (tmp_path / "stderr.log").read_text()
    assert names == [entry.name for entry in CATALOG]
    assert not result.isError
    assert result.structuredContent == rest.post("/v1/risk/var", json=request).json()  # another server's REST
    assert refused.isError and refused.structuredContent is not None
    assert refused.structuredContent["error"]["code"] == "not_found"
    assert (home / "registry.db").exists()  # the app's state was opened on the home
    assert "MCP server ready on stdio" in log  # logging went to stderr, not into the protocol


def test_protocol_channel_keeps_stray_output_off_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    with _protocol_channel() as channel:
        print("a stray print")
        os.write(1, b"a stray C-level write\n")
        channel.write(b'{"jsonrpc": "2.0"}\n')
        channel.flush()
    print("after")
    out, err = capfd.readouterr()
    assert out == '{"jsonrpc": "2.0"}\nafter\n'
    assert "a stray print" in err and "a stray C-level write" in err
