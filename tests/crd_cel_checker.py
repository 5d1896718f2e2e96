"""A strict reading of a CRD's x-kubernetes-validations rules, close to what a real kube-apiserver does.

The sandbox evaluates rules with cel-python (celpy), which is lenient: it has no type checker, and it
never validates a schema `default` on its own. A real API server (cel-go) does both, and refused two of
our rules that the sandbox accepted (issue 14). This module does what the API server does, with Google's
C++ CEL runtime (`cel-expr-python`):

* Type checking. `self` (and `oldSelf`) are declared with the type the API server derives from the
  OpenAPI schema (k8s.io/apiserver/pkg/cel/common/schemas.go): an object is a structured type with its
  declared properties only (built here as a protobuf message, proto3 `optional` scalars so `has()` works),
  integer -> int, number -> double, string -> string (date/date-time -> timestamp, duration -> duration,
  byte -> bytes), boolean -> bool, array -> list(T), additionalProperties -> map(string, T),
  x-kubernetes-int-or-string -> dyn. A schema with x-kubernetes-preserve-unknown-fields and no type is not
  exposed (neither is an array or map of it), and the root (and any x-kubernetes-embedded-resource) gets
  apiVersion, kind and metadata.{name, generateName}. Property names are escaped as the API server does.
  A rule must have type bool, a messageExpression type string.
* The environment is the one a Kubernetes 1.28 API server compiles new rules in (its 1.27 compatibility
  environment, k8s.io/apiserver/pkg/cel/environment/base.go): standard CEL without cross-type numeric
  comparisons (`double > int` does not compile) and without optional types, the strings extension
  (version 0) and the Kubernetes lists, regex and URL libraries, declared below with their signatures.
  Quantity, sets, IP/CIDR, format and semver functions came later and are undeclared: a rule using one
  fails to compile here, as it would on 1.28.
* Evaluation as at admission: values are plain maps of what is present (reading an absent field is an
  error, "no such key"), numbers of `number` fields are doubles, and every rule of every schema node is
  evaluated on the value at that node. A schema `default` is evaluated alone, WITHOUT the nested defaults
  it would get when applied: that is how the API server validates defaults when the CRD is created.

Known differences from cel-go, none of which our rules touch: `has()` on a list or map field is type-checked
against a protobuf repeated field (the runtime, on plain maps, is the API server's); mixed-type list
literals such as `[1, 'a']` compile here (cel-go refuses them); a list of lists or a map of lists inside an
object is typed list(dyn)/map(string, dyn); there is no cost estimate; `optionalOldSelf` is not modelled.
"""

from __future__ import annotations

import base64
import copy
import datetime
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cel_expr_python import cel
from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, struct_pb2, timestamp_pb2

PACKAGE = "crdcel"
_FDP = descriptor_pb2.FieldDescriptorProto

# --- Property names as CEL sees them (k8s.io/apiserver/pkg/cel/escaping.go) ---------------------------

_CEL_RESERVED = {
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if",
    "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
}  # fmt: skip
_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}


def escape(name: str) -> str | None:
    """The name a property has in CEL, or None where the API server does not expose it."""
    if not name or name[0].isdigit():
        return None
    if name in _CEL_RESERVED:
        return f"__{name}__"
    parts = re.split(r"(__|[-./])", name)
    if any(re.search(r"[^a-zA-Z0-9_]", part) for part in parts if part not in _ESCAPES):
        return None
    return "".join(_ESCAPES.get(part, part) for part in parts)


# --- CEL types of schema nodes ------------------------------------------------------------------------


@dataclass(frozen=True)
class CelType:
    kind: str  # int double string bool bytes timestamp duration dyn message list map
    name: str = ""  # the message's full name
    elem: CelType | None = None

    def cel(self) -> cel.Type:
        if self.kind == "message":
            return cel.Type(self.name)
        if self.kind == "list":
            return cel.Type.List(self.elem.cel())
        if self.kind == "map":
            return cel.Type.Map(cel.Type.STRING, self.elem.cel())
        return getattr(cel.Type, self.kind.upper())


_SCALAR_PROTO = {
    "int": _FDP.TYPE_INT64,
    "double": _FDP.TYPE_DOUBLE,
    "string": _FDP.TYPE_STRING,
    "bool": _FDP.TYPE_BOOL,
    "bytes": _FDP.TYPE_BYTES,
}
_WELL_KNOWN = {
    "timestamp": ".google.protobuf.Timestamp",
    "duration": ".google.protobuf.Duration",
    "dyn": ".google.protobuf.Value",
}
_STRING_FORMATS = {"byte": "bytes", "duration": "duration", "date": "timestamp", "date-time": "timestamp"}
_METADATA = {"type": "object", "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}}}


def with_type_and_object_meta(schema: dict[str, Any]) -> dict[str, Any]:
    """apiVersion, kind, metadata.name and metadata.generateName, as every resource root has them."""
    props = schema.get("properties", {})
    meta = props.get("metadata", {}).get("properties", {})
    if (
        props.get("kind", {}).get("type") == "string"
        and props.get("apiVersion", {}).get("type") == "string"
        and meta.get("name", {}).get("type") == "string"
        and meta.get("generateName", {}).get("type") == "string"
    ):
        return schema
    props = {**props, "kind": {"type": "string"}, "apiVersion": {"type": "string"}, "metadata": _METADATA}
    return {**schema, "properties": props}


def _camel(name: str) -> str:
    """protobuf's ToCamelCase(name, lower_first=False): a map field's entry message is named after it."""
    words = name.split("_")
    return "".join(word[:1].upper() + word[1:] for word in words)


def exposed(schema: dict[str, Any]) -> bool:
    """Whether the API server exposes values of this schema to CEL (schemas.go returns a type for it)."""
    if schema.get("x-kubernetes-int-or-string"):
        return True
    kind = schema.get("type")
    if kind == "array":
        return isinstance(schema.get("items"), dict) and exposed(schema["items"])
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return exposed(schema["additionalProperties"])
    return kind in ("object", "string", "boolean", "number", "integer")


class _Types:
    """Declares a protobuf message per object node of a schema; maps each node to its CEL type."""

    def __init__(self) -> None:
        self.file = descriptor_pb2.FileDescriptorProto(name=f"{PACKAGE}.proto", package=PACKAGE, syntax="proto3")
        self.file.dependency.extend(
            ["google/protobuf/timestamp.proto", "google/protobuf/duration.proto", "google/protobuf/struct.proto"]
        )
        self.by_node: dict[int, CelType | None] = {}
        self._names: set[str] = set()
        self._keep: list[dict[str, Any]] = []

    def declare(self, schema: dict[str, Any], path: str, root: bool = False) -> CelType | None:
        node_id = id(schema)
        if node_id not in self.by_node:
            self.by_node[node_id] = self._declare(
                schema, path, root or bool(schema.get("x-kubernetes-embedded-resource"))
            )
        return self.by_node[node_id]

    def _declare(self, schema: dict[str, Any], path: str, root: bool) -> CelType | None:
        if schema.get("x-kubernetes-int-or-string"):
            return CelType("dyn")
        if root:
            schema = with_type_and_object_meta(schema)
            self._keep.append(schema)  # its new nodes are keyed by id(): keep them alive
        kind = schema.get("type")
        if kind == "array":
            items = schema.get("items")
            elem = self.declare(items, f"{path}[*]") if items is not None else None
            return CelType("list", elem=elem) if elem else None
        if kind == "object":
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                elem = self.declare(extra, f"{path}[*]")
                return CelType("map", elem=elem) if elem else None
            return self._message(schema, path)
        if kind == "string":
            return CelType(_STRING_FORMATS.get(schema.get("format", ""), "string"))
        return {"boolean": CelType("bool"), "number": CelType("double"), "integer": CelType("int")}.get(kind)

    def _message(self, schema: dict[str, Any], path: str) -> CelType:
        base = re.sub(r"[^A-Za-z0-9_]", "_", path.replace("[*]", "_item")) or "root"
        base = base if base[0].isalpha() else f"m{base}"
        name, n = base, 1
        while name in self._names:
            n, name = n + 1, f"{base}_{n}"
        self._names.add(name)
        message = self.file.message_type.add(name=name)
        for prop_name, prop in schema.get("properties", {}).items():
            cel_name = escape(prop_name)
            if cel_name is None:
                continue  # not accessible from CEL
            prop_type = self.declare(prop, f"{path}.{cel_name}" if path else cel_name)
            if prop_type is None:
                continue
            number = len(message.field) + 1
            proto_field = message.field.add(name=cel_name, number=number, json_name=cel_name)
            if prop_type.kind in ("list", "map"):
                proto_field.label = _FDP.LABEL_REPEATED
                elem = prop_type.elem if prop_type.elem.kind not in ("list", "map") else CelType("dyn")
                if prop_type.kind == "map":
                    entry_name = f"{_camel(cel_name)}Entry"
                    entry = message.nested_type.add(name=entry_name)
                    entry.options.map_entry = True
                    entry.field.add(name="key", number=1, type=_FDP.TYPE_STRING, label=_FDP.LABEL_OPTIONAL)
                    self._set_type(entry.field.add(name="value", number=2, label=_FDP.LABEL_OPTIONAL), elem)
                    proto_field.type, proto_field.type_name = _FDP.TYPE_MESSAGE, f".{PACKAGE}.{name}.{entry_name}"
                else:
                    self._set_type(proto_field, elem)
            else:
                proto_field.label = _FDP.LABEL_OPTIONAL
                self._set_type(proto_field, prop_type)
                if prop_type.kind in _SCALAR_PROTO:
                    # proto3 `optional`: the field has presence, so has() tells set from unset.
                    proto_field.proto3_optional = True
                    proto_field.oneof_index = len(message.oneof_decl)
                    message.oneof_decl.add(name=f"_{cel_name}")
        return CelType("message", name=f"{PACKAGE}.{name}")

    @staticmethod
    def _set_type(proto_field: descriptor_pb2.FieldDescriptorProto, cel_type: CelType) -> None:
        if cel_type.kind in _SCALAR_PROTO:
            proto_field.type = _SCALAR_PROTO[cel_type.kind]
        else:
            proto_field.type = _FDP.TYPE_MESSAGE
            proto_field.type_name = _WELL_KNOWN.get(cel_type.kind) or f".{cel_type.name}"

    def pool(self) -> descriptor_pool.DescriptorPool:
        pool = descriptor_pool.DescriptorPool()
        for module in (timestamp_pb2, duration_pb2, struct_pb2):
            proto = descriptor_pb2.FileDescriptorProto()
            module.DESCRIPTOR.CopyToProto(proto)
            pool.Add(proto)
        pool.Add(self.file)
        return pool


# --- The Kubernetes CEL libraries a 1.28 API server has for new rules ---------------------------------

_T = cel.Type
_COMPARABLE = {
    "int": _T.INT, "uint": _T.UINT, "double": _T.DOUBLE, "bool": _T.BOOL, "string": _T.STRING,
    "bytes": _T.BYTES, "duration": _T.DURATION, "timestamp": _T.TIMESTAMP,
}  # fmt: skip
_SUMMABLE = ("int", "uint", "double", "duration")
URL = _T.AbstractType("kubernetes.URL")


def _typed_signatures() -> dict[str, list[tuple[str, cel.Type, list[cel.Type], bool]]]:
    """name -> [(overload id, result, parameters, is_member)], as cel-go's ext.Strings(0) and
    k8s.io/apiserver/pkg/cel/library (lists.go, regex.go, urls.go) declare them."""
    s, i, b, ls = _T.STRING, _T.INT, _T.BOOL, _T.List(_T.STRING)
    sig: dict[str, list[tuple[str, cel.Type, list[cel.Type], bool]]] = {
        "charAt": [("string_char_at_int", s, [s, i], True)],
        "indexOf": [("string_index_of_string", i, [s, s], True), ("string_index_of_string_int", i, [s, s, i], True)],
        "lastIndexOf": [
            ("string_last_index_of_string", i, [s, s], True),
            ("string_last_index_of_string_int", i, [s, s, i], True),
        ],
        "lowerAscii": [("string_lower_ascii", s, [s], True)],
        "upperAscii": [("string_upper_ascii", s, [s], True)],
        "trim": [("string_trim", s, [s], True)],
        "replace": [
            ("string_replace_string_string", s, [s, s, s], True),
            ("string_replace_string_string_int", s, [s, s, s, i], True),
        ],
        "split": [("string_split_string", ls, [s, s], True), ("string_split_string_int", ls, [s, s, i], True)],
        "substring": [("string_substring_int", s, [s, i], True), ("string_substring_int_int", s, [s, i, i], True)],
        "join": [("list_join", s, [ls], True), ("list_join_string", s, [ls, s], True)],
        "find": [("string_find_string", s, [s, s], True)],
        "findAll": [("string_find_all_string", ls, [s, s], True), ("string_find_all_string_int", ls, [s, s, i], True)],
        "url": [("string_to_url", URL, [s], False)],
        "isURL": [("is_url_string", b, [s], False)],
        "getQuery": [("url_get_query", _T.Map(s, ls), [URL], True)],
        "isSorted": [],
        "min": [],
        "max": [],
        "sum": [],
    }
    for part in ("Scheme", "Host", "Hostname", "Port", "EscapedPath"):
        sig[f"get{part}"] = [(f"url_get_{part.lower()}", s, [URL], True)]
    for name, elem in _COMPARABLE.items():
        sig["isSorted"].append((f"list_{name}_is_sorted_bool", b, [_T.List(elem)], True))
        sig["min"].append((f"list_{name}_min", elem, [_T.List(elem)], True))
        sig["max"].append((f"list_{name}_max", elem, [_T.List(elem)], True))
        sig["indexOf"].append((f"list_{name}_index_of_int", i, [_T.List(elem), elem], True))
        sig["lastIndexOf"].append((f"list_{name}_last_index_of_int", i, [_T.List(elem), elem], True))
        if name in _SUMMABLE:
            sig["sum"].append((f"list_{name}_sum", elem, [_T.List(elem)], True))
    return sig


def _index_of(target: Any, needle: Any, start: int = 0) -> int:
    if isinstance(target, str):
        if not 0 <= start <= len(target):
            raise IndexError(f"index out of range: {start}")
        return target.find(needle, start)
    return next((n for n, item in enumerate(target) if item == needle), -1)


def _last_index_of(target: Any, needle: Any, end: int | None = None) -> int:
    if isinstance(target, str):
        return target.rfind(needle, 0, None if end is None else end + len(needle))
    return next((n for n in range(len(target) - 1, -1, -1) if target[n] == needle), -1)


def _url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if not (parts.scheme or text.startswith("/")):
        raise ValueError(f"URL is not absolute: {text!r}")
    return text


def _is_url(text: str) -> bool:
    try:
        _url(text)
    except ValueError:
        return False
    return True


def _nonempty(items: list[Any]) -> list[Any]:
    if not items:
        raise ValueError("the list is empty")
    return items


_IMPLS: dict[tuple[str, int], Any] = {
    ("charAt", 2): lambda s, n: s[n] if n < len(s) else "",
    ("indexOf", 2): _index_of,
    ("indexOf", 3): _index_of,
    ("lastIndexOf", 2): _last_index_of,
    ("lastIndexOf", 3): _last_index_of,
    ("lowerAscii", 1): lambda s: "".join(c.lower() if c.isascii() else c for c in s),
    ("upperAscii", 1): lambda s: "".join(c.upper() if c.isascii() else c for c in s),
    ("trim", 1): str.strip,
    ("replace", 3): lambda s, old, new: s.replace(old, new),
    ("replace", 4): lambda s, old, new, n: s.replace(old, new, n),
    ("split", 2): lambda s, sep: s.split(sep),
    ("split", 3): lambda s, sep, n: [] if n == 0 else s.split(sep, n - 1 if n > 0 else -1),
    ("substring", 2): lambda s, start: s[start:],
    ("substring", 3): lambda s, start, end: s[start:end],
    ("join", 1): lambda items: "".join(items),
    ("join", 2): lambda items, sep: sep.join(items),
    ("find", 2): lambda s, pattern: m.group(0) if (m := re.search(pattern, s)) else "",
    ("findAll", 2): lambda s, pattern: [m.group(0) for m in re.finditer(pattern, s)],
    ("findAll", 3): lambda s, pattern, n: [m.group(0) for m in re.finditer(pattern, s)][: n if n >= 0 else None],
    ("url", 1): _url,
    ("isURL", 1): _is_url,
    ("getScheme", 1): lambda u: urllib.parse.urlsplit(u).scheme,
    ("getHost", 1): lambda u: urllib.parse.urlsplit(u).netloc.rpartition("@")[2],
    ("getHostname", 1): lambda u: urllib.parse.urlsplit(u).hostname or "",
    ("getPort", 1): lambda u: str(urllib.parse.urlsplit(u).port or ""),
    ("getEscapedPath", 1): lambda u: urllib.parse.urlsplit(u).path,
    ("getQuery", 1): lambda u: urllib.parse.parse_qs(urllib.parse.urlsplit(u).query),
    ("isSorted", 1): lambda items: all(a <= b for a, b in zip(items, items[1:])),
    ("min", 1): lambda items: min(_nonempty(items)),
    ("max", 1): lambda items: max(_nonempty(items)),
    ("sum", 1): lambda items: sum(items[1:], items[0]) if items else 0,
}


def k8s_library(typed: bool) -> list[cel.CelExtensionBase]:
    """The library for type checking (precise signatures) or for evaluation (dyn, with implementations)."""
    decls = []
    for name, overloads in _typed_signatures().items():
        if typed:
            decls.append(
                cel.FunctionDecl(
                    name, [cel.Overload(oid, ret, params, member) for oid, ret, params, member in overloads]
                )
            )
            continue
        # Evaluation: one dyn overload per arity, dispatching on the runtime value in Python.
        arities = sorted({(len(params), member) for _, _, params, member in overloads})
        decls.append(
            cel.FunctionDecl(
                name,
                [
                    cel.Overload(f"dyn_{name}_{arity}", _T.DYN, [_T.DYN] * arity, member, impl=_IMPLS[(name, arity)])
                    for arity, member in arities
                ],
            )
        )
    return [cel.CelExtension("kubernetes_1_28", decls)]


# --- Rules, checking, evaluation ----------------------------------------------------------------------


class CompileError(Exception):
    pass


@dataclass(frozen=True)
class Rule:
    path: str  # the schema node, e.g. spec.hyperparameters or spec.hyperparameterSearch.parameters[*]
    index: int
    rule: str
    message: str = ""
    message_expression: str = ""
    optional_old_self: bool = False
    schema: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.path or '<root>'}#{self.index}"

    @property
    def transition(self) -> bool:
        return re.search(r"\boldSelf\b", self.rule) is not None


@dataclass(frozen=True)
class Failure:
    path: str  # where the value is, e.g. spec.hyperparameters (default)
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.detail} (rule: {self.rule})"


_ABSENT = object()


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path: properties by name, items and additionalProperties as [*]."""
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}" if path else name)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from walk(schema[key], f"{path}[*]")


class StrictCel:
    """The rules of one CRD version's openAPIV3Schema, type-checked and evaluated the API server's way."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self._types = _Types()
        self._types.declare(root, "", root=True)
        for path, node in walk(root):  # nodes under names CEL cannot see still validate their own values
            self._types.declare(node, path)
        self.rules = [
            Rule(
                path,
                n,
                rule["rule"],
                rule.get("message", ""),
                rule.get("messageExpression", ""),
                bool(rule.get("optionalOldSelf")),
                node,
            )
            for path, node in walk(root)
            for n, rule in enumerate(node.get("x-kubernetes-validations", []))
        ]
        self._pool = self._types.pool()
        self._typed_envs: dict[CelType, cel.Env] = {}
        self._eval_env = cel.NewEnv(variables={"self": _T.DYN, "oldSelf": _T.DYN}, extensions=k8s_library(typed=False))
        self._programs: dict[str, Any] = {}

    # Type checking ------------------------------------------------------------------------------------

    def type_of(self, schema: dict[str, Any]) -> CelType | None:
        if id(schema) not in self._types.by_node:
            raise KeyError("not a node of this schema")
        return self._types.by_node[id(schema)]

    def compile(self, expression: str, schema: dict[str, Any], result: cel.Type = _T.BOOL) -> None:
        """Type-check expression with self (and oldSelf) typed from schema; CompileError says why not."""
        self_type = self.type_of(schema)
        if self_type is None:
            raise CompileError("the API server does not expose this schema node to CEL")
        env = self._typed_envs.get(self_type)
        if env is None:
            variables = {"self": self_type.cel(), "oldSelf": self_type.cel()}
            env = cel.NewEnv(descriptor_pool=self._pool, variables=variables, extensions=k8s_library(typed=True))
            self._typed_envs[self_type] = env
        try:
            checked = env.compile(expression)
        except RuntimeError as error:
            raise CompileError(str(error)) from None
        if checked.return_type() != result:
            raise CompileError(f"must evaluate to {result.name().lower()}, not {checked.return_type().name().lower()}")

    def check(self, rule: Rule) -> list[str]:
        """What the API server would say when the CRD is created: nothing, or why the rule is refused."""
        errors = []
        if rule.optional_old_self:
            errors.append("optionalOldSelf is not modelled (optional types are not in the 1.28 environment)")
        for text, result, what in (
            (rule.rule, _T.BOOL, "rule"),
            (rule.message_expression, _T.STRING, "messageExpression"),
        ):
            if text:
                try:
                    self.compile(text, rule.schema, result)
                except CompileError as error:
                    errors.append(f"{what} {text!r}: {error}")
        return errors

    # Evaluation ---------------------------------------------------------------------------------------

    def _evaluate(self, expression: str, data: dict[str, Any]) -> Any:
        program = self._programs.get(expression)
        if program is None:
            program = self._programs[expression] = self._eval_env.compile(expression)
        return program.eval(data=data)

    def validate(
        self, schema: dict[str, Any], value: Any, path: str = "", old: Any = _ABSENT, root: bool = False
    ) -> list[Failure]:
        """Evaluate every rule in schema's subtree on value (its rules, its present children's rules...)."""
        failures: list[Failure] = []
        if value is None:
            return failures
        rules = schema.get("x-kubernetes-validations", [])
        if rules:
            data = {"self": to_cel(value, schema, root)}
            if old is not _ABSENT:
                data["oldSelf"] = to_cel(old, schema, root)
            for rule in rules:
                if re.search(r"\boldSelf\b", rule["rule"]) and "oldSelf" not in data:
                    continue  # a transition rule: only on updates
                result = self._evaluate(rule["rule"], data)
                if result.type() == _T.ERROR:
                    failures.append(Failure(path, rule["rule"], f"evaluation error: {result.value()}"))
                elif result.type() != _T.BOOL:
                    failures.append(Failure(path, rule["rule"], f"not a bool: {result.value()!r}"))
                elif not result.value():
                    failures.append(Failure(path, rule["rule"], self._message(rule, data)))
        children: list[tuple[str, dict[str, Any], Any, Any]] = []
        if isinstance(value, dict):
            olds = old if isinstance(old, dict) else {}
            for name, prop in schema.get("properties", {}).items():
                if name in value:
                    children.append((f"{path}.{name}" if path else name, prop, value[name], olds.get(name, _ABSENT)))
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for key, item in value.items():
                    children.append((f"{path}[{key}]", extra, item, olds.get(key, _ABSENT)))
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            children = [(f"{path}[{n}]", schema["items"], item, _ABSENT) for n, item in enumerate(value)]
        for child_path, child_schema, child, child_old in children:
            embedded = bool(child_schema.get("x-kubernetes-embedded-resource"))
            failures += self.validate(child_schema, child, child_path, child_old, embedded)
        return failures

    def _message(self, rule: dict[str, Any], data: dict[str, Any]) -> str:
        if rule.get("messageExpression"):
            result = self._evaluate(rule["messageExpression"], data)
            if result.type() == _T.STRING:
                return result.value()
        return rule.get("message") or f"failed rule: {rule['rule']}"

    def defaults(self) -> list[tuple[str, dict[str, Any]]]:
        """Every schema node that has a default, with its path."""
        return [(path, node) for path, node in walk(self.root) if "default" in node]

    def validate_default(self, path: str, schema: dict[str, Any]) -> list[Failure]:
        """The check the API server makes of a default when the CRD is created: the default as written
        (no nested defaults), with oldSelf = self for transition rules."""
        default = copy.deepcopy(schema["default"])
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        return self.validate(schema, default, f"{path} (default)", old=default, root=embedded)


# --- Values as CEL sees them --------------------------------------------------------------------------

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _go_duration(text: str) -> datetime.timedelta:
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
    parts = re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", body)
    if not parts or "".join(a + b for a, b in parts) != body:
        raise ValueError(f"not a duration: {text!r}")
    return datetime.timedelta(seconds=sign * sum(float(n) * _DURATION_UNITS[u] for n, u in parts))


def to_cel(value: Any, schema: dict[str, Any], root: bool = False) -> Any:
    """value as the API server hands it to CEL: numbers of number fields are doubles, objects keep their
    declared (escaped) properties only, formatted strings are timestamps, durations or bytes."""
    if value is None or schema.get("x-kubernetes-int-or-string"):
        return value
    if root:
        schema = with_type_and_object_meta(schema)
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return {
                key: to_cel(item, extra, bool(extra.get("x-kubernetes-embedded-resource")))
                for key, item in value.items()
            }
        out = {}
        for name, prop in schema.get("properties", {}).items():
            cel_name = escape(name)
            if name in value and cel_name is not None and exposed(prop):
                out[cel_name] = to_cel(value[name], prop, bool(prop.get("x-kubernetes-embedded-resource")))
        return out
    if kind == "array" and isinstance(value, list):
        return [to_cel(item, schema.get("items", {})) for item in value]
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "string" and isinstance(value, str):
        fmt = schema.get("format", "")
        if fmt in ("date-time", "date"):
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if fmt == "duration":
            return _go_duration(value)
        if fmt == "byte":
            return base64.b64decode(value)
    return value


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it (apiextensions-apiserver schema/defaulting):
    absent properties get a copy of their default, then every child is defaulted, defaults included."""
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if "default" in prop and value.get(name) is None and not (name in value and prop.get("nullable")):
                value[name] = copy.deepcopy(prop["default"])
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in schema.get("properties", {}):
                apply_defaults(item, schema["properties"][name])
            elif isinstance(extra, dict):
                apply_defaults(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value
