"""Regenerate the Python code for protocols/v1/*.proto (run after editing a .proto file).

Generated files are committed so that a device install needs no code generator.
Usage: python scripts/gen_protos.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protocols" / "v1").glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        print("protoc failed", file=sys.stderr)
        return int(code)
    # messages.proto has no service: drop its empty grpc module.
    empty = ROOT / "protocols" / "v1" / "messages_pb2_grpc.py"
    empty.unlink(missing_ok=True)
    print("generated:", ", ".join(protos))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
