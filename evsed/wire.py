"""Frozen records with bounds, and their JSON form: the machinery under evsed.protocol.

A record's fields say their type and bounds (`Annotated[int, Range(1, 99)]`); records check
them when built, so a record in hand is valid, and `from_wire` refuses what does not fit.
The protocol takes Annotated, Literal, ClassVar, Generic and TypeVar from here: typing's for the
type checker, this module's own at run time (typing costs `evsed status` 4 ms to import).
"""

from __future__ import annotations

import _thread
import collections.abc
import json
import re
import sys
import types

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import datetime as dt  # imported when a record has a time field (_Names): 1 ms of `evsed status`
    from typing import Annotated as Annotated, ClassVar as ClassVar, Generic as Generic, Literal as Literal
    from typing import Any, Callable, TypeVar as TypeVar, cast as cast, dataclass_transform

    R = TypeVar("R", bound="Record")
    T = TypeVar("T")


class WireError(ValueError):
    """A message that is not the protocol; the text names the field and what it expected."""


# --- the type forms at run time -----------------------------------------------------------------
class _Form:
    """`Annotated[...]`, `Literal[...]`, `ClassVar[...]`: what subscribing one makes (`make`)."""

    def __init__(self, name: str, make: Callable[[tuple[Any, ...]], Any]):
        self.name, self.make = name, make

    def __getitem__(self, args: Any) -> Any:
        return self.make(args if isinstance(args, tuple) else (args,))

    def __repr__(self) -> str:
        return f"evsed.wire.{self.name}"


class _Type:
    """A field type wire makes: `X | None` of it is a _Union, as of typing's forms."""

    def __or__(self, other: Any) -> _Union:
        return _Union((self, other))

    def __ror__(self, other: Any) -> _Union:
        return _Union((other, self))


class _Annotated(_Type):
    """`Annotated[type, bound, ...]`; nested ones are flattened, inner bounds first, as typing does."""

    type: Any
    bounds: tuple[Any, ...]

    def __init__(self, args: tuple[Any, ...]):
        inner: Any = args[0]
        bounds: tuple[Any, ...] = args[1:]
        if isinstance(inner, _Annotated):
            inner, bounds = inner.type, (*inner.bounds, *bounds)
        self.type, self.bounds = inner, bounds

    def __repr__(self) -> str:
        return f"Annotated[{self.type!r}, {', '.join(map(repr, self.bounds))}]"


class _Literal(_Type):
    def __init__(self, values: tuple[Any, ...]):
        self.values = values

    def __repr__(self) -> str:
        return f"Literal{list(self.values)!r}"


class _Union(_Type):
    def __init__(self, args: tuple[Any, ...]):
        self.args = tuple(type(None) if a is None else a for a in args)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.args))


class _Parameterized:
    """`Command[StatusReply]` as a base: the class derives from Command, and its __orig_bases__
    keep the argument (args_of)."""

    def __init__(self, origin: type, args: tuple[Any, ...]):
        self.origin, self.args = origin, args

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (self.origin,)


if not TYPE_CHECKING:
    Annotated = _Form("Annotated", _Annotated)
    Literal = _Form("Literal", _Literal)
    ClassVar = _Form("ClassVar", lambda args: ClassVar)  # a class constant, not a field

    class Generic:
        """A generic base: `Generic[R]` derives from it, `Command[StatusReply]` from Command."""

        def __class_getitem__(cls, args: Any) -> _Parameterized:
            return _Parameterized(cls, args if isinstance(args, tuple) else (args,))

    def TypeVar(name: str, *constraints: Any, bound: Any = None) -> str:  # noqa: N802 - typing's name
        return name

    def cast(typ: Any, value: Any) -> Any:
        return value

    def dataclass_transform(**kwargs: Any) -> Callable[[type], type]:
        return lambda cls: cls


def args_of(cls: type, origin: type) -> tuple[Any, ...]:
    """The arguments of `origin[...]` among cls's bases (`Command[StatusReply]`: (StatusReply,))."""
    return next(b.args for b in cls.__dict__.get("__orig_bases__", ())
                if isinstance(b, _Parameterized) and b.origin is origin)


def choices(form: Any) -> tuple[Any, ...]:
    """The values of a `Literal[...]` type: `choices(Mode)` is ("fast", "solar", "min+solar")."""
    if not isinstance(form, _Literal):
        raise TypeError(f"{form!r}: not a Literal of evsed.wire")
    return form.values


# The bounds in a field's Annotated type: plain frozen tuples (hashable, as Annotated needs), each
# declared at a fraction of a NamedTuple's cost (collections.namedtuple compiles code for each class).
class Range(tuple[float, float]):
    """A number's bounds, both included."""

    __slots__ = ()

    def __new__(cls, lo: float, hi: float) -> Range:
        return tuple.__new__(cls, (lo, hi))

    @property
    def lo(self) -> float:
        return self[0]

    @property
    def hi(self) -> float:
        return self[1]


class Text(tuple[int, int, str, bool, bool]):
    """A string's bounds. `clip`: longer text is cut, for free text the daemon says (a device's
    error), never for a request; `printable`: no control characters (a TOML block may have lines)."""

    __slots__ = ()

    def __new__(cls, max: int, min: int = 0, pattern: str = "", clip: bool = False, printable: bool = True) -> Text:
        return tuple.__new__(cls, (max, min, pattern, clip, printable))

    @property
    def max(self) -> int:
        return self[0]

    @property
    def min(self) -> int:
        return self[1]

    @property
    def pattern(self) -> str:
        return self[2]

    @property
    def clip(self) -> bool:
        return self[3]

    @property
    def printable(self) -> bool:
        return self[4]


class Items(tuple[int]):
    """At most this many items in a list or an object."""

    __slots__ = ()

    def __new__(cls, max: int) -> Items:
        return tuple.__new__(cls, (max,))

    @property
    def max(self) -> int:
        return self[0]


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- one converter per field type ---------------------------------------------------------------
class _Conv:
    """check(): a Python value, type-checked, bounded, normalized. decode(): the JSON value to
    the Python one (then checked). encode(): the JSON value. largest(): the longest valid value."""

    def check(self, v: Any, where: str) -> Any:
        raise NotImplementedError

    def decode(self, v: Any, where: str) -> Any:
        return self.check(v, where)

    def encode(self, v: Any) -> Any:
        return v

    def largest(self) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class _Bool(_Conv):
    def check(self, v: Any, where: str) -> Any:
        if not isinstance(v, bool):
            raise WireError(f"{where}: expected true or false, got {_show(v)}")
        return v

    def largest(self) -> Any:
        return False

    def describe(self) -> str:
        return "bool"


class _Number(_Conv):
    def __init__(self, kind: type, bounds: Range):
        self.kind, self.bounds = kind, bounds

    def check(self, v: Any, where: str) -> Any:
        lo, hi = self.bounds.lo, self.bounds.hi
        if self.kind is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        else:  # finite: inf - inf and nan - nan are nan (math.isfinite, without math's 0.2 ms to import)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (isinstance(v, int) or v - v == 0)
        if not ok:
            raise WireError(f"{where}: expected {'an integer' if self.kind is int else 'a number'}, got {_show(v)}")
        if not lo <= v <= hi:
            raise WireError(f"{where}: expected {lo:g}..{hi:g}, got {_show(v)}")
        return float(v) if self.kind is float and type(v) is not float else v

    def largest(self) -> Any:
        if self.kind is int:
            return max(int(self.bounds.lo), int(self.bounds.hi), key=lambda n: len(str(n)))
        return -abs(self.bounds.lo) / 3 if self.bounds.lo < 0 else self.bounds.hi / 3

    def describe(self) -> str:
        if self.kind is int:
            return f"int {int(self.bounds.lo)}..{int(self.bounds.hi)}"
        return f"number {self.bounds.lo:g}..{self.bounds.hi:g}"


class _Str(_Conv):
    def __init__(self, text: Text):
        self.text = text
        self.pattern = re.compile(text.pattern) if text.pattern else None

    def check(self, v: Any, where: str) -> Any:
        t = self.text
        if not isinstance(v, str):
            raise WireError(f"{where}: expected a string, got {_show(v)}")
        if t.clip:
            v = v[:t.max] if v.isprintable() or not t.printable else "".join(
                c if c.isprintable() else " " for c in v[:t.max])
        if not t.min <= len(v) <= t.max:
            raise WireError(f"{where}: expected {t.min}..{t.max} characters, got {len(v)}")
        if t.printable and not v.isprintable():
            raise WireError(f"{where}: control characters in {_show(v)}")
        if self.pattern is not None and not self.pattern.fullmatch(v):
            raise WireError(f"{where}: expected {t.pattern}, got {_show(v)}")
        return v

    def largest(self) -> Any:
        if self.pattern is not None:
            return "a" * self.text.max
        return ("\U0001F50C" if self.text.printable else "\x01") * self.text.max

    def describe(self) -> str:
        return f"string {self.text.min}..{self.text.max}" + (f" {self.text.pattern}" if self.text.pattern else "")


class _Choice(_Conv):
    def __init__(self, values: tuple[Any, ...]):
        self.values = values

    def check(self, v: Any, where: str) -> Any:
        if isinstance(v, bool) or v not in self.values:
            raise WireError(f"{where}: expected one of {', '.join(map(str, self.values))}, got {_show(v)}")
        return v

    def largest(self) -> Any:
        return max(self.values, key=lambda c: len(str(c)))

    def describe(self) -> str:
        return " / ".join(f"`{v}`" for v in self.values)


class _Time(_Conv):
    """An aware datetime; ISO 8601 with its offset on the wire."""

    def __init__(self) -> None:
        import datetime as dt  # imported already: the field's type is datetime's
        self.dt = dt

    def check(self, v: Any, where: str) -> Any:
        dt = self.dt
        if not isinstance(v, dt.datetime) or v.tzinfo is None:
            raise WireError(f"{where}: expected a time with its UTC offset, got {_show(v)}")
        return v

    def decode(self, v: Any, where: str) -> Any:
        dt = self.dt
        if not isinstance(v, str) or len(v) > 40:
            raise WireError(f"{where}: expected an ISO 8601 time, got {_show(v)}")
        try:
            when = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise WireError(f"{where}: expected an ISO 8601 time, got {_show(v)}") from None
        return self.check(when, where)

    def encode(self, v: Any) -> Any:
        return v.astimezone(self.dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def largest(self) -> Any:
        dt = self.dt
        return dt.datetime(2099, 12, 31, 23, 59, 59, 999000, tzinfo=dt.timezone.utc)

    def describe(self) -> str:
        return "ISO 8601 time with offset"


class _Optional(_Conv):
    def __init__(self, inner: _Conv):
        self.inner = inner

    def check(self, v: Any, where: str) -> Any:
        return None if v is None else self.inner.check(v, where)

    def decode(self, v: Any, where: str) -> Any:
        return None if v is None else self.inner.decode(v, where)

    def encode(self, v: Any) -> Any:
        return None if v is None else self.inner.encode(v)

    def largest(self) -> Any:
        return self.inner.largest()

    def describe(self) -> str:
        return self.inner.describe() + " or null"


class _Tuple(_Conv):
    def __init__(self, inner: _Conv, items: Items):
        self.inner, self.max = inner, items.max

    def check(self, v: Any, where: str) -> Any:
        if not isinstance(v, (tuple, list)):
            raise WireError(f"{where}: expected a tuple, got {_show(v)}")
        if len(v) > self.max:
            raise WireError(f"{where}: expected at most {self.max} items, got {len(v)}")
        return tuple(self.inner.check(x, f"{where}[{i}]") for i, x in enumerate(v))

    def decode(self, v: Any, where: str) -> Any:
        if not isinstance(v, list):
            raise WireError(f"{where}: expected a list, got {_show(v)}")
        if len(v) > self.max:
            raise WireError(f"{where}: expected at most {self.max} items, got {len(v)}")
        return tuple(self.inner.decode(x, f"{where}[{i}]") for i, x in enumerate(v))

    def encode(self, v: Any) -> Any:
        return [self.inner.encode(x) for x in v]

    def largest(self) -> Any:
        return tuple(self.inner.largest() for _ in range(self.max))

    def describe(self) -> str:
        return f"list of at most {self.max} ({self.inner.describe()})"


class _Map(_Conv):
    """A JSON object of bounded string keys; a read-only mapping in Python (records stay frozen)."""

    def __init__(self, key: _Str, inner: _Conv, items: Items):
        self.key, self.inner, self.max = key, inner, items.max

    def _each(self, v: Any, where: str, conv: Callable[[Any, str], Any]) -> Any:
        if len(v) > self.max:
            raise WireError(f"{where}: expected at most {self.max} entries, got {len(v)}")
        return types.MappingProxyType({self.key.check(k, f"{where} key"): conv(x, f"{where}.{k}")
                                       for k, x in v.items()})

    def check(self, v: Any, where: str) -> Any:
        if not isinstance(v, (dict, types.MappingProxyType)):
            raise WireError(f"{where}: expected a mapping, got {_show(v)}")
        return self._each(v, where, self.inner.check)

    def decode(self, v: Any, where: str) -> Any:
        if not isinstance(v, dict):
            raise WireError(f"{where}: expected an object, got {_show(v)}")
        return self._each(v, where, self.inner.decode)

    def encode(self, v: Any) -> Any:
        return {k: self.inner.encode(x) for k, x in v.items()}

    def largest(self) -> Any:
        width = self.key.text.max
        return {f"{i:0{width}d}"[-width:]: self.inner.largest() for i in range(self.max)}

    def describe(self) -> str:
        return f"object of at most {self.max} ({self.inner.describe()})"


class _Nested(_Conv):
    def __init__(self, cls: type[Record]):
        self.cls = cls

    def check(self, v: Any, where: str) -> Any:
        if not isinstance(v, self.cls):
            raise WireError(f"{where}: expected {self.cls.__name__}, got {_show(v)}")
        return v

    def decode(self, v: Any, where: str) -> Any:
        return self.cls.from_wire(v, where=where)

    def encode(self, v: Any) -> Any:
        return v.to_wire()

    def largest(self) -> Any:
        return largest(self.cls)

    def describe(self) -> str:
        return self.cls.__name__


def _conv(hint: Any, owner: str) -> _Conv:
    """The converter of one field's type hint; every string, number and list must say its bounds."""
    bounds: tuple[Any, ...] = ()
    if isinstance(hint, _Annotated):
        hint, bounds = hint.type, hint.bounds
    if isinstance(hint, (_Union, types.UnionType)):
        args = hint.args if isinstance(hint, _Union) else hint.__args__
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            raise TypeError(f"{owner}: a union must be one type or None, got {hint!r}")
        inner = rest[0]
        return _Optional(_conv(_Annotated((inner, *bounds)) if bounds else inner, owner))
    if isinstance(hint, _Literal):
        return _Choice(hint.values)
    if hint is bool:
        return _Bool()
    if "datetime" in sys.modules and hint is sys.modules["datetime"].datetime:  # no time field before it
        return _Time()
    if isinstance(hint, type) and issubclass(hint, Record):
        return _Nested(hint)
    bound = bounds[0] if bounds else None
    if hint in (int, float):
        if not isinstance(bound, Range):
            raise TypeError(f"{owner}: a number needs its Range")
        return _Number(hint, bound)
    if hint is str:
        if not isinstance(bound, Text):
            raise TypeError(f"{owner}: a string needs its Text bounds")
        return _Str(bound)
    origin, args = getattr(hint, "__origin__", None), getattr(hint, "__args__", ())
    if not isinstance(hint, types.GenericAlias):  # tuple[...], Mapping[...] (collections.abc's) only
        origin = None
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(bound, Items):
            raise TypeError(f"{owner}: a list needs its Items bound")
        return _Tuple(_conv(args[0], owner), bound)
    if origin in (collections.abc.Mapping, dict):
        key = _conv(args[0], owner)
        if not isinstance(bound, Items) or not isinstance(key, _Str):
            raise TypeError(f"{owner}: a mapping needs bounded string keys and its Items bound")
        return _Map(key, _conv(args[1], owner), bound)
    raise TypeError(f"{owner}: no wire form for {hint!r} (Annotated and Literal come from evsed.wire, "
                    "Mapping from collections.abc)")


class _Factory:
    """A default made anew for each record: what `field(default_factory=...)` puts in a record's body."""

    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[], Any]):
        self.factory = factory


def field(*, default_factory: Callable[[], T]) -> T:
    """A field's default made anew for each record (a mapping's `{}`), as dataclasses.field says it:
    the records do without the dataclasses module (a third of `evsed status`) until asked (_as_dataclass)."""
    return cast("T", _Factory(default_factory))


_MISSING: Any = object()  # a required field's default


class _Field:
    """One field of a record class: `omit_none`: a field whose default is None is left out of the
    JSON while None; `default` is _MISSING when required or made by `factory`."""

    __slots__ = ("name", "conv", "required", "omit_none", "default", "factory")

    def __init__(self, name: str, conv: _Conv, required: bool, omit_none: bool, default: Any,
                 factory: Callable[[], Any] | None):
        self.name, self.conv, self.required, self.omit_none = name, conv, required, omit_none
        self.default, self.factory = default, factory


class _Names(dict[str, object]):
    """The names a record's annotations are read in: its module's, then `dt`, the datetime module,
    imported only for a record with a time field (so a module may import it for type checkers only)."""

    def __init__(self, module: dict[str, Any]):
        super().__init__()
        self.module = module

    def __missing__(self, name: str) -> Any:
        if name in self.module:
            return self.module[name]
        if name == "dt":
            import datetime
            return datetime
        raise KeyError(name)


def _hints(cls: type) -> dict[str, tuple[type, Any]]:
    """name -> (the class that declares it, its annotation) over cls and its bases, bases first
    (as a dataclass orders fields; a name declared again keeps its place, with the last type)."""
    found: dict[str, tuple[type, Any]] = {}
    for c in reversed(cls.__mro__):
        for name, hint in c.__dict__.get("__annotations__", {}).items():
            found[name] = (c, hint)
    return found


def _evaluate(cls: type, hint: Any) -> Any:
    """An annotation as the type it names, as typing.get_type_hints(include_extras=True) gives it
    for a record's field: each annotation of a module evaluated once (`Sentence`, `Amps | None`
    recur: the first status reply a CLI reads builds 20 records' fields)."""
    if not isinstance(hint, str):
        return hint
    key = (cls.__module__, hint)
    found = _TYPES.get(key, _MISSING)
    if found is _MISSING:
        module = sys.modules[cls.__module__].__dict__
        if hint.isidentifier() and hint in module:  # most are a name (`Sentence`): no code to compile
            found = _TYPES[key] = module[hint]
        else:
            found = _TYPES[key] = eval(hint, module, _Names(module))  # noqa: S307 - the class's own source text
    return found


_TYPES: dict[tuple[str, str], Any] = {}  # (module, annotation) -> the type it names
_CONVS: dict[tuple[str, str], _Conv] = {}  # ... -> its converter (they hold no state of a record)


_SPECS: dict[type, tuple[_Field, ...]] = {}


def spec(cls: type) -> tuple[_Field, ...]:
    """The fields of a record class with their converters (built once per class): its annotations
    and those of the records it derives from, bases first, as a dataclass orders them."""
    found = _SPECS.get(cls)
    if found is None:
        fields: list[_Field] = []
        for name, (declared, hint) in _hints(cls).items():
            if declared is not cls and issubclass(declared, Record) and declared is not Record:
                fields.extend(f for f in spec(declared) if f.name == name)  # the base's default (gone
                continue  # from its body once it is a dataclass) and its converter
            text, hint = hint, _evaluate(declared, hint)
            if hint is ClassVar:
                continue
            if not issubclass(declared, Record):
                raise TypeError(f"{cls.__name__}.{name}: a field of {declared.__name__}, not a record")
            default = getattr(cls, name, _MISSING)
            factory = default.factory if isinstance(default, _Factory) else None
            if factory is not None:
                default = _MISSING
            key = (declared.__module__, text) if isinstance(text, str) else None
            conv = _CONVS.get(key) if key else None
            if conv is None:
                conv = _conv(hint, f"{cls.__name__}.{name}")
                if key:
                    _CONVS[key] = conv
            fields.append(_Field(name, conv, default is _MISSING and factory is None, default is None, default,
                                 factory))
        found = _SPECS[cls] = tuple(fields)
    return found


# --- records -----------------------------------------------------------------------------------
class _AsDataclass:
    """`__dataclass_fields__` of a record class: asked for (dataclasses.replace, fields, asdict),
    it makes the class, and the records it derives from, keyword-only dataclasses that keep
    Record's methods (frozen, checked). Until then no record needs the dataclasses module, which
    costs `evsed status` a third of its time to import (it imports inspect)."""

    def __get__(self, obj: object, cls: type) -> Any:
        if cls is Record:
            raise AttributeError("Record is not a dataclass; its subclasses are")
        found = _DATACLASS_FIELDS.get(cls)
        if found is None:
            _as_dataclass(cls)
            found = _DATACLASS_FIELDS[cls]
        return found


_DATACLASS_FIELDS: dict[type, Any] = {}
_making = _thread.RLock()  # a class may first be asked for from two threads (the store's and the loop)


def _as_dataclass(cls: type) -> None:
    import dataclasses
    with _making:
        for c in reversed(cls.__mro__):
            if issubclass(c, Record) and c is not Record and c not in _DATACLASS_FIELDS:
                for f in spec(c):  # built first: the spec keeps the factories the dataclass takes away
                    if f.factory is not None and isinstance(c.__dict__.get(f.name), _Factory):
                        setattr(c, f.name, dataclasses.field(default_factory=f.factory))
                # The fields alone: Record's methods stay, for this class and its subclasses; its
                # class constants (ClassVar: wire's, which dataclasses does not know) are not fields
                annotations = c.__dict__.get("__annotations__", {})
                names = {f.name for f in spec(c)}
                c.__annotations__ = {k: v for k, v in annotations.items() if k in names}
                try:
                    dataclasses.dataclass(init=False, repr=False, eq=False, match_args=False, kw_only=True)(c)
                finally:
                    c.__annotations__ = annotations
                # and each class's fields come through Record's descriptor (a made base's must not
                # answer for a subclass not yet made)
                _DATACLASS_FIELDS[c] = c.__dict__["__dataclass_fields__"]
                delattr(c, "__dataclass_fields__")


def _values(record: Record) -> tuple[Any, ...]:
    return tuple(getattr(record, f.name) for f in spec(type(record)))


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(field,))
class Record:
    """A frozen message or a part of one: each subclass is a frozen, keyword-only record whose
    fields are checked when it is built. It behaves as a frozen keyword-only dataclass (its
    methods are Record's, the same for every subclass), and dataclasses.replace and fields take
    it (_AsDataclass)."""

    STRICT: ClassVar[bool] = False  # unknown fields refused (requests), else ignored (replies, events)
    LABEL: ClassVar[str] = ""  # how errors name it (the command, the event type)

    if not TYPE_CHECKING:  # what the type checker takes from dataclass_transform
        __dataclass_fields__ = _AsDataclass()

        def __init__(self, **kwargs: Any) -> None:
            cls, taken = type(self), 0
            for f in spec(cls):
                if f.name in kwargs:
                    value, taken = kwargs[f.name], taken + 1
                elif f.factory is not None:
                    value = f.factory()
                elif f.required:
                    raise TypeError(f"{cls.__qualname__}.__init__() missing required keyword-only argument: "
                                    f"{f.name!r}")
                else:
                    value = f.default
                object.__setattr__(self, f.name, value)
            if taken != len(kwargs):
                names = {f.name for f in spec(cls)}
                unknown = ", ".join(repr(k) for k in kwargs if k not in names)
                raise TypeError(f"{cls.__qualname__}.__init__() got an unexpected keyword argument {unknown}")
            self.__post_init__()

        def __eq__(self, other: object) -> bool:
            if other.__class__ is self.__class__:
                return _values(self) == _values(other)
            return NotImplemented

        def __hash__(self) -> int:
            return hash(_values(self))

        def __repr__(self) -> str:
            fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in spec(type(self)))
            return f"{type(self).__qualname__}({fields})"

        def __setattr__(self, name: str, value: Any) -> None:
            raise AttributeError(f"cannot assign to field {name!r}")

        def __delattr__(self, name: str) -> None:
            raise AttributeError(f"cannot delete field {name!r}")

    def __post_init__(self) -> None:
        where = self.LABEL or type(self).__name__
        for f in spec(type(self)):
            value = getattr(self, f.name)
            checked = f.conv.check(value, f"{where}: {f.name}")
            if checked is not value:
                object.__setattr__(self, f.name, checked)
        self.validate()

    def validate(self) -> None:
        """Rules across fields; raises WireError."""

    def fields_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in spec(type(self)):
            value = getattr(self, f.name)
            if value is None and f.omit_none:
                continue
            out[f.name] = f.conv.encode(value)
        return out

    def to_wire(self) -> dict[str, Any]:
        return self.fields_wire()

    @classmethod
    def from_wire(cls: type[R], data: object, *, where: str = "") -> R:
        where = where or cls.LABEL or cls.__name__
        if not isinstance(data, dict):
            raise WireError(f"{where}: expected a JSON object, got {_show(data)}")
        fields = spec(cls)
        if cls.STRICT:
            extra = set(data) - {f.name for f in fields}
            if extra:
                raise WireError(f"{where}: unknown field(s) {', '.join(sorted(map(str, extra)))}")
        args: dict[str, Any] = {}
        for f in fields:
            if f.name in data:
                args[f.name] = f.conv.decode(data[f.name], f"{where}: {f.name}")
            elif f.required:
                raise WireError(f"{where}: {f.name} missing")
        return cls(**args)


def largest(cls: type[R]) -> R:
    """The valid record of cls with the longest JSON form: every string, list and number at its
    bound (what a size cap must hold, and what the flood benchmark sends)."""
    return cls(**{f.name: f.conv.largest() for f in spec(cls)})


def describe(cls: type) -> list[tuple[str, str, bool]]:
    """(field, its type and bounds, required) for the docs."""
    return [(f.name, f.conv.describe(), f.required) for f in spec(cls)]


def encode_line(message: dict[str, Any]) -> bytes:
    """One message as one line of UTF-8 JSON."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"


def decode_line(line: bytes) -> object:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        raise WireError("not JSON") from None
