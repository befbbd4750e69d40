"""Packed wire encoding for the integer lists of ONNX node attributes.

onnx.proto is proto2 and declares `AttributeProto.ints` unpacked, so every element carries its own field
tag: two bytes for a 0/1 flag. The protobuf wire format lets a parser read a repeated scalar field in
either encoding ("parsers must be able to parse repeated fields that were compiled as packed as if they
were not packed, and vice versa"), and onnx/onnxruntime parse with the standard protobuf runtime, so the
same model written packed is the same message in fewer bytes. This rewrites the serialized bytes, since
the Python protobuf runtime always writes a field the way its descriptor declares it.
"""

from __future__ import annotations

import numpy as np
import onnx

# field numbers from onnx.proto: the path ModelProto.graph -> GraphProto.node -> NodeProto.attribute
_GRAPH, _NODE, _ATTRIBUTE, _INTS = 7, 1, 5, 8
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values: ten bytes, two's complement, as protobuf writes them
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _fields(buf: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """(field number, wire type, raw bytes of the whole field, payload) for each field, in order."""
    out = []
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, pos = _read_varint(buf, pos)
            payload = buf[start:pos]
        elif wire == _LEN:
            size, pos = _read_varint(buf, pos)
            payload = buf[pos : pos + size]
            pos += size
        elif wire == _I64:
            pos += 8
            payload = buf[start:pos]
        elif wire == _I32:
            pos += 4
            payload = buf[start:pos]
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        out.append((number, wire, buf[start:pos], payload))
    return out


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _packed_varints(values: np.ndarray) -> bytes:
    """The base-128 varints of int64 values, joined (vectorised: tree attributes hold 10^5 of them)."""
    v = values.astype(np.int64).view(np.uint64)
    groups = np.stack([(v >> np.uint64(7 * i)) & np.uint64(0x7F) for i in range(10)], axis=1).astype(np.uint8)
    length = np.maximum(1, 10 - np.argmax(groups[:, ::-1] != 0, axis=1))  # bytes each value needs
    length[~groups.any(axis=1)] = 1
    keep = np.arange(10) < length[:, None]
    more = np.arange(10) < (length - 1)[:, None]  # continuation bit on all but each value's last byte
    return (groups | (more * 0x80).astype(np.uint8))[keep].tobytes()


def _attribute(buf: bytes) -> bytes:
    attribute = onnx.AttributeProto.FromString(buf)
    if not attribute.ints:
        return buf
    ints = np.array(attribute.ints, dtype=np.int64)
    del attribute.ints[:]
    return attribute.SerializeToString(deterministic=True) + _len_field(_INTS, _packed_varints(ints))


def _rewrite(buf: bytes, inner: dict[int, object]) -> bytes:
    out = bytearray()
    for number, wire, raw, payload in _fields(buf):
        descend = inner.get(number) if wire == _LEN else None
        if descend is None:
            out += raw
        elif callable(descend):
            out += _len_field(number, descend(payload))
        else:
            assert isinstance(descend, dict)
            out += _len_field(number, _rewrite(payload, descend))
    return bytes(out)


def pack_attribute_ints(model_bytes: bytes) -> bytes:
    """The serialized ModelProto with every node attribute's `ints` written packed."""
    return _rewrite(model_bytes, {_GRAPH: {_NODE: {_ATTRIBUTE: _attribute}}})
