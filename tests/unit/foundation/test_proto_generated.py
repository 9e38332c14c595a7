"""The committed generated modules are exactly what the pinned grpcio-tools makes of the .proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GENERATED = ("exportd_pb2.py", "exportd_pb2.pyi", "exportd_pb2_grpc.py")


def test_regenerating_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "proto").mkdir()
    shutil.copy(ROOT / "proto" / "exportd.proto", tmp_path / "proto" / "exportd.proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.",
         "--grpc_python_out=.", "proto/exportd.proto"],
        cwd=tmp_path, check=True, capture_output=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "proto" / name).read_text()
        committed = (ROOT / "proto" / name).read_text()
        assert fresh == committed, f"proto/{name} is stale: run `make proto` and commit"


def test_generated_modules_import() -> None:
    from proto import exportd_pb2, exportd_pb2_grpc

    msg = exportd_pb2.LeaderMessage(epoch=3, ack=exportd_pb2.Ack(report_seq=7))
    assert exportd_pb2.LeaderMessage.FromString(msg.SerializeToString()).ack.report_seq == 7
    assert hasattr(exportd_pb2_grpc, "CoordinatorStub")
