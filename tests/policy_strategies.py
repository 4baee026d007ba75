"""Hypothesis strategies for policy documents: random YAML-shaped data,
and documents shaped like real policies whose values are valid about 99
times in 100 (test_policy_fuzz.py; test_policy_cwd.py checks that every
registered matcher is drawn)."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

from pyoomd.policy.matchers import MATCHERS, GlobMatcher, Matcher, RegexMatcher, UserMatcher

KEYS = ["version", "hosts", "rules", "name", "match", "adjust", "protect", "kill", "signal", "grace",
        "allow_name_only", *(m.name for m in MATCHERS), "bogus"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["group", "process", "SIGKILL", "SIGTERM", "5s", "250ms", "root", "/usr/sbin/sshd",
                     "(", "^a$", "[", "*", "build-*", "1", "+300", "\x00", "\ud800"[:0] + "\u2028"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6), st.integers(-3, 3))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(keys, inner, max_size=5),
), max_leaves=30)

# Closer to real files: the right keys, each value valid about 99 times in
# 100 (a document has ~30 of them: most documents load and their rules get
# evaluated), random otherwise.


def mostly(valid: st.SearchStrategy[Any], broken: st.SearchStrategy[Any] = documents) -> st.SearchStrategy[Any]:
    # Hypothesis favours the ends of a range and the first branch of one_of:
    # an inner value picks the broken branch, about 1 time in 100.
    return st.integers(0, 99).flatmap(lambda n: broken if n == 37 else valid)


# Regexes: real ones, RE2-refused ones, and the catastrophic (for a
# backtracking engine) ones the match-time fuzzer feeds hostile names to.
CATASTROPHIC = [r"^(\w+\s?)*$", r"^(a+)+$", r"(a|aa)+$", r"^(.*a){12}$", r"^([a-z]+)*[0-9]$", r"(x+x+)+y",
                r"^(\w|\s|\d)*$", r"(.*){1,32}!"]
REGEXES = ["^sshd$", "--type=renderer", "^(chrome|chromium)$", "java", "^$", "^", "python[0-9.]*",
           "(?i)firefox", "[[:alpha:]]+", "\\bkworker\\b", *CATASTROPHIC]
regexes = st.one_of(st.sampled_from(REGEXES), st.text(max_size=10))
globs = st.sampled_from(["/usr/sbin/sshd", "/usr/bin/*", "/usr/lib/firefox*/firefox*", "/*", "/opt/x/[ab]?",
                         "/user.slice/*/app.slice/*build*", "/system.slice/*.service", "/home/*/src*", "/tmp/*"])
users = st.one_of(st.integers(0, 65535), st.sampled_from(["root", "0", "nobody", "no-such-user-x"]))
names = st.builds(lambda a, b: a + b, st.sampled_from(list(string.ascii_letters + string.digits)),
                  st.text(string.ascii_letters + string.digits + "_.:@+-", max_size=12))
# A value for each kind of matcher; the keys come from the registry, so a
# new matcher is fuzzed as soon as it is registered (a new kind: a KeyError here).
KIND_VALUES: dict[type[Matcher[Any]], st.SearchStrategy[Any]] = {
    RegexMatcher: regexes,
    GlobMatcher: st.one_of(globs, st.lists(globs, min_size=1, max_size=3)),
    UserMatcher: st.one_of(users, st.lists(users, min_size=1, max_size=3)),
}
match_specs = st.fixed_dictionaries({}, optional={
    m.name: mostly(KIND_VALUES[type(m)]) for m in MATCHERS}).filter(lambda m: len(m) > 0)
rule_specs = st.fixed_dictionaries(
    {"name": mostly(names), "match": mostly(match_specs)},
    optional={"adjust": mostly(st.integers(-2000, 2000)), "protect": mostly(st.booleans()),
              "kill": mostly(st.sampled_from(["process", "group", "cgroup"])),
              "signal": mostly(st.sampled_from(["SIGTERM", "SIGKILL"])),
              "grace": mostly(st.sampled_from(["5s", "250ms", "2s", 0.5, 1])),
              "allow_name_only": mostly(st.booleans())})
policy_docs = st.fixed_dictionaries(
    {"version": mostly(st.just(1)),
     "rules": mostly(st.lists(rule_specs, min_size=1, max_size=4, unique_by=lambda r: str(r.get("name"))))},
    optional={"hosts": mostly(st.lists(st.sampled_from(["host-*", "host-1", "other", "*"]), min_size=1,
                                       max_size=3)),
              "bogus": st.integers(0, 99).flatmap(lambda n: documents if n == 37 else st.nothing())})
