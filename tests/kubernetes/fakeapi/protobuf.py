"""Just enough of Kubernetes' protobuf encoding to read a SelfSubjectAccessReview.

kubectl sends typed requests such as ``auth can-i``'s review as
``application/vnd.kubernetes.protobuf`` (while accepting JSON answers): the
``k8s\\x00`` magic, then a ``runtime.Unknown`` whose ``raw`` field holds the object.
"""

from __future__ import annotations

from typing import Any

MAGIC = b"k8s\x00"
_ATTRIBUTES = {
    1: "namespace",
    2: "verb",
    3: "group",
    4: "version",
    5: "resource",
    6: "subresource",
    7: "name",
}


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def fields(data: bytes) -> dict[int, list[Any]]:
    """Field number → values (ints for varints, bytes for length-delimited)."""
    found: dict[int, list[Any]] = {}
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            length, at = _varint(data, at)
            value, at = data[at : at + length], at + length
        elif wire == 5:
            value, at = data[at : at + 4], at + 4
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        found.setdefault(number, []).append(value)
    return found


def access_review(body: bytes) -> dict[str, Any]:
    """A protobuf SelfSubjectAccessReview as its JSON form (resource attributes only)."""
    if not body.startswith(MAGIC):
        raise ValueError("not a Kubernetes protobuf body")
    unknown = fields(body[len(MAGIC) :])
    review = fields(unknown.get(2, [b""])[0])
    spec = fields(review.get(2, [b""])[0])
    attributes = {
        _ATTRIBUTES[number]: values[0].decode()
        for number, values in fields(spec.get(1, [b""])[0]).items()
        if number in _ATTRIBUTES and values[0]
    }
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {},
        "spec": {"resourceAttributes": attributes},
    }
