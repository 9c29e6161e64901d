"""What ``tradebot up`` plans to run: a durable embedded server, and the ports it checks."""

from __future__ import annotations

import socket
from pathlib import Path

from shared.config import Settings
from shared.up import plan_processes, taken_ports


def test_embedded_server_fsyncs_every_write(tmp_path: Path) -> None:
    procs, _ = plan_processes(Settings(data_dir=tmp_path))
    [server] = [p for p in procs if p.name == "redis"]
    args = server.args
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "always"


def test_taken_ports_names_the_process_and_setting(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        external = "redis://127.0.0.1:1/0"  # no embedded server, whose port may be in use here
        settings = Settings(data_dir=tmp_path, sim_port=port, metrics_port=0, redis_url=external)
        procs, _ = plan_processes(settings)
        assert taken_ports(procs) == [
            f"port {port} for exchange_sim is already in use (set TB_SIM_PORT to move it)"
        ]
