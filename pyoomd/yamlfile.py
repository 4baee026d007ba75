"""The one way config and policy files are read and parsed.

Reading (``read_trusted``): the path is ``stat``ed first and anything but a
regular file (a FIFO, a device, a socket, a directory; through a symlink
too) is refused before it is opened, so a FIFO planted in the policy
directory cannot block ``check``, ``rank`` or start-up; the file is then
opened with ``O_NONBLOCK`` (a FIFO swapped in between the two cannot block
the open either) and its type, owner and mode are checked on the opened fd
(as root: refused when another user owns it or group/others can write it,
the care sudo takes with sudoers).  At most ``MAX_FILE_BYTES`` are read.

Parsing (``parse``): one document, composed by libyaml where PyYAML has it
(~6x faster than the pure-Python parser, which is the fallback), then
checked before anything is constructed: duplicate keys (PyYAML silently
keeps the last) are errors naming file:line:column; a document that expands
(aliases counted each time they are used) beyond ``MAX_NODES`` nodes, uses
more than ``MAX_ALIASES`` aliases or nests deeper than ``MAX_DEPTH`` is
refused ("billion laughs": 464 bytes of config ran to MemoryError before).
Every error is a ``ConfigError`` (exit code 78).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import yaml

from .errors import ConfigError
from .settings.trust import trust_problem

# A config or policy is a few KiB; 1 MiB is far beyond any real one and keeps
# a stray binary or log file from being parsed at length.
MAX_FILE_BYTES = 1 << 20
# No real file comes near this many nodes once aliases expand.
MAX_NODES = 100_000
# Aliases (``*name``) in one document: real files use a handful, if any.
MAX_ALIASES = 1000
# Nesting: the policy schema is 5 levels deep, the config's 4.
MAX_DEPTH = 64

_LOADER: Any = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _devnull() -> os.stat_result:
    return os.stat(os.devnull)


def read_trusted(path: str, euid: int | None = None, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The text of a config or policy file; ConfigError naming ``path``."""
    euid = os.geteuid() if euid is None else euid
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(path, f"cannot read: {e.strerror}") from None
    except ValueError as e:  # a NUL in the path
        raise ConfigError(repr(path), f"cannot read: {e}") from None
    if stat.S_ISCHR(st.st_mode) and os.path.samestat(st, _devnull()):
        return ""  # `--config /dev/null`: the defaults (it never blocks)
    if not stat.S_ISREG(st.st_mode):
        via = " (through a symlink)" if os.path.islink(path) else ""
        raise ConfigError(path, f"refused: {_kind(st.st_mode)}{via}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise ConfigError(path, f"cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped in after the stat
            raise ConfigError(path, f"refused: {_kind(st.st_mode)}, not a regular file")
        problem = trust_problem(st, euid)
        if problem:
            raise ConfigError(path, f"refused: {problem}")
        chunks = []
        left = max_bytes + 1
        while left > 0:
            try:
                b = os.read(fd, left)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        raw = b"".join(chunks)
    except OSError as e:
        raise ConfigError(path, f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:
        raise ConfigError(path, f"larger than {max_bytes} bytes: not a pyoomd file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, f"not UTF-8 (byte {e.start})") from None


def parse(path: str, text: str) -> tuple[Any, Any]:
    """(data, node tree) of one YAML document; ConfigError naming
    file:line:column for bad YAML, duplicate keys and expansion bombs."""
    try:
        loader = _LOADER(text)
        try:
            node = loader.get_single_node()
            check_nodes(path, node)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = e.problem or e.context or str(e)
        if "nesting depth" in problem:  # libyaml's own limit (1000)
            problem = f"nested too deeply ({problem})"
        raise ConfigError(path, f"invalid YAML: {problem}", line, col) from None
    except yaml.YAMLError as e:  # a ReaderError (NUL, bad UTF-8) has a position, not a mark
        pos = getattr(e, "position", None)
        line = text.count("\n", 0, pos) + 1 if isinstance(pos, int) else None
        raise ConfigError(path, f"invalid YAML: {e}", line) from None
    except RecursionError:  # the pure-Python composer recurses ("[" * 20000)
        raise ConfigError(path, "invalid YAML: nested too deeply", 1) from None
    return data, node


def check_nodes(path: str, root: Any) -> None:
    """Alias count, duplicate keys, expansion and depth, before construction."""
    if root is None:
        return
    # The graph: every distinct node once; a reference to a node already
    # referenced is an alias use.
    seen: set[int] = {id(root)}
    graph = [root]
    aliases = 0
    while graph:
        node = graph.pop()
        if isinstance(node, yaml.MappingNode):
            children = [c for kv in node.value for c in kv]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            continue
        for c in children:
            if id(c) in seen:
                aliases += 1
                if aliases > MAX_ALIASES:
                    m = c.start_mark
                    raise ConfigError(path, f"more than {MAX_ALIASES} aliases", m.line + 1, m.column + 1)
                continue
            seen.add(id(c))
            graph.append(c)
    # The tree, as construction and validation would walk it (capped).
    count = 0
    checked: set[int] = set()
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(path, f"document too large (over {MAX_NODES} nodes once aliases expand)")
        if depth > MAX_DEPTH:
            m = node.start_mark
            raise ConfigError(path, f"nested deeper than {MAX_DEPTH} levels", m.line + 1, m.column + 1)
        if isinstance(node, yaml.MappingNode):
            if id(node) not in checked:
                checked.add(id(node))
                keys: set[str] = set()
                for k, _ in node.value:
                    if isinstance(k, yaml.ScalarNode):
                        if k.value in keys:
                            m = k.start_mark
                            raise ConfigError(path, f"duplicate key {k.value!r}", m.line + 1, m.column + 1)
                        keys.add(k.value)
            for k, v in node.value:
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, depth + 1) for v in node.value)
