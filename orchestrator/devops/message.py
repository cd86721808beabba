"""A queue message as the DevOps code needs it: its body decoded to JSON and its properties with str keys.

Two encodings reach us (docs/devops-protocol.md#message-body-encoding): the UTF-8 JSON of `messageBody` when the pipeline sets
`useDataContractSerializer: false`, and, with the task's default `true`, the same text wrapped by .NET's
DataContractSerializer in binary XML ([MC-NBFX]): a `string` element in the Serialization namespace, then
the text in one or more length-prefixed records. We read those records rather than slicing from the first
`{`, which breaks when the text length is 123 (0x7B, "{") and the preamble itself ends in a brace.

The message file (`--callback MESSAGE.json`, docs/architecture.md#queue-messages):
`{"message_id": "...", "body": <object or JSON text> | "body_base64": "<raw bytes>", "application_properties": {...}}`
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.jsonfile import parse_json_object, read_json_object

_SHORT_ELEMENT, _ELEMENT = 0x40, 0x41
_SHORT_XMLNS, _XMLNS = 0x08, 0x09
_END_ELEMENT = 0x01
# Text record code (even; +1 = "...WithEndElement") -> (bytes in the length prefix, encoding).
_TEXT_RECORDS = {
    0x98: (1, "utf-8"), 0x9A: (2, "utf-8"), 0x9C: (4, "utf-8"),          # Chars8/16/32Text
    0x9E: (1, "utf-8"), 0xA0: (2, "utf-8"), 0xA2: (4, "utf-8"),          # Bytes8/16/32Text
    0xB6: (1, "utf-16-le"), 0xB8: (2, "utf-16-le"), 0xBA: (4, "utf-16-le"),  # UnicodeChars8/16/32Text
}
_LENGTH_FORMATS = {1: "<B", 2: "<H", 4: "<I"}


@dataclass(frozen=True)
class QueueMessage:
    message_id: str
    body: dict[str, Any]
    properties: dict[str, Any] = field(default_factory=dict)


class _NbfxError(ValueError):
    pass


def _multibyte_int31(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(5):
        if pos >= len(data):
            raise _NbfxError("truncated length")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise _NbfxError("length too long")


def _string(data: bytes, pos: int) -> tuple[str, int]:
    length, pos = _multibyte_int31(data, pos)
    if pos + length > len(data):
        raise _NbfxError("truncated string")
    return data[pos:pos + length].decode("utf-8"), pos + length


def unwrap_data_contract(data: bytes) -> str:
    """The text inside a DataContractSerializer `<string>` element in .NET binary XML."""
    if not data or data[0] not in (_SHORT_ELEMENT, _ELEMENT):
        raise _NbfxError("not a binary XML element")
    pos = 1
    if data[0] == _ELEMENT:
        _prefix, pos = _string(data, pos)
    _name, pos = _string(data, pos)
    while pos < len(data) and data[pos] in (_SHORT_XMLNS, _XMLNS):
        if data[pos] == _XMLNS:
            _ns_prefix, pos = _string(data, pos + 1)
            _ns, pos = _string(data, pos)
        else:
            _ns, pos = _string(data, pos + 1)
    parts: list[str] = []
    while pos < len(data) and data[pos] != _END_ELEMENT:
        code = data[pos]
        record = _TEXT_RECORDS.get(code & ~1)
        if record is None:
            raise _NbfxError(f"unexpected record 0x{code:02x}")
        width, encoding = record
        if pos + 1 + width > len(data):
            raise _NbfxError("truncated text record")
        (length,) = struct.unpack(_LENGTH_FORMATS[width], data[pos + 1:pos + 1 + width])
        start = pos + 1 + width
        if start + length > len(data):
            raise _NbfxError("truncated text")
        parts.append(data[start:start + length].decode(encoding))
        pos = start + length
        if code & 1:  # ...WithEndElement
            break
    return "".join(parts)


def decode_body(raw: bytes | str) -> dict[str, Any]:
    """A message body (plain or DataContract-wrapped JSON) as a JSON object; ValueError when it is neither."""
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = unwrap_data_contract(raw)
        except (_NbfxError, UnicodeDecodeError):
            text = raw.decode("utf-8-sig", errors="strict")
    value = json.loads(text.strip())
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def decode_properties(properties: Mapping[Any, Any]) -> dict[str, Any]:
    """azure-servicebus hands application properties with bytes keys and bytes string values [ASB]."""
    out: dict[str, Any] = {}
    for key, value in properties.items():
        name = key.decode("utf-8", errors="replace") if isinstance(key, (bytes, bytearray)) else str(key)
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", errors="replace")
        out[name] = value
    return out


@dataclass(frozen=True)
class MessageFile:
    """A message file as read, before its body is decoded: what `orchestrator handle` and `--callback` share."""

    message_id: str
    body: bytes  # the raw body, as a queue would deliver it
    properties: dict[str, Any] = field(repr=False)  # holds the token: never shown
    body_problem: Problem | None = None  # the body could not even be read as bytes


MESSAGE_SHAPE = "a JSON object with body and application_properties"


def load_message_file(path: Path) -> MessageFile:
    """The one reader of the message file format (docs/architecture.md#queue-messages):
    `{"message_id", "body" | "body_base64", "application_properties"}`, `body` an object or its text.

    A file that is not such an object raises InvalidInputError naming the file and key. A body that cannot be
    read is returned as `body_problem`, so that the trigger can still close the job the properties name."""
    return message_from_json(read_json_object(path, expected=MESSAGE_SHAPE), where=str(path), default_id=path.stem)


def load_message_stream(stream: BinaryIO) -> MessageFile:
    """The same format read from standard input (`handle -`), so that no file holding the job token need exist."""
    where = "standard input"
    try:
        text = stream.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError([Problem(where, "", f"cannot be read as JSON ({exc})")]) from None
    return message_from_json(parse_json_object(text, where, expected=MESSAGE_SHAPE), where=where, default_id="stdin")


def message_from_json(data: dict[str, Any], *, where: str, default_id: str) -> MessageFile:
    properties = data.get("application_properties") or {}
    if not isinstance(properties, dict):
        raise InvalidInputError([Problem(where, "application_properties", "expected a JSON object")])
    body, problem = b"", None
    if "body" in data and "body_base64" in data:
        problem = Problem(where, "body", "give one of body and body_base64, not both")
    elif "body_base64" in data:
        try:
            body = base64.b64decode(str(data["body_base64"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            problem = Problem(where, "body_base64", f"not base64 ({exc})")
    elif isinstance(data.get("body"), str):
        body = data["body"].encode("utf-8")
    elif "body" in data:
        body = json.dumps(data["body"]).encode("utf-8")
    return MessageFile(message_id=str(data.get("message_id") or default_id), body=body, properties=properties,
                       body_problem=problem)


def read_message_file(path: Path) -> QueueMessage:
    """A message file with its body decoded (for `--callback`). Raises InvalidInputError naming the file and key."""
    loaded = load_message_file(path)
    if loaded.body_problem is not None:
        raise InvalidInputError([loaded.body_problem])
    body: dict[str, Any] = {}
    if loaded.body:
        try:
            body = decode_body(loaded.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInputError([Problem(str(path), "body", f"not a JSON message body ({exc})")]) from None
    return QueueMessage(message_id=loaded.message_id, body=body, properties=decode_properties(loaded.properties))
