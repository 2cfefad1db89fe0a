from datetime import UTC, datetime, timedelta

import pytest

from engine.errors import CriterionTypeError, RegistryError, RuleError, UnknownOperatorError
from engine.rules import operators
from engine.rules.fields import compile_key
from engine.rules.operators import Operator, get_operator, operator_names

ALIASES = {
    "equals": ("eq",),
    "nequals": ("neq",),
    "iequals": ("ieq",),
    "contains": (),
    "ncontains": (),
    "icontains": (),
    "incontains": (),
    "startswith": (),
    "istartswith": (),
    "endswith": (),
    "iendswith": (),
    "lessthan": ("lt",),
    "greaterthan": ("gt",),
    "matchwildcard": (),
    "matchregex": (),
    "regex": (),
    "iregex": (),
    "timediff_lt": ("td_lt",),
    "timediff_gt": ("td_gt",),
    "exists": (),
    "nexists": (),
    "inside": ("in",),
    "ninside": ("nin",),
    "search": (),
}


def check(name, value, pattern):
    return get_operator(name).func(value, pattern)


# --- registry ------------------------------------------------------------------


def test_the_whole_stackstorm_table_is_registered():
    expected = sorted([*ALIASES, *(alias for aliases in ALIASES.values() for alias in aliases)])
    assert operator_names() == expected
    for name, aliases in ALIASES.items():
        operator = get_operator(name)
        assert operator.name == name
        assert operator.aliases == aliases
        for alias in aliases:
            assert get_operator(alias) is operator


@pytest.mark.parametrize("name", ["EQUALS", "Eq", "MatchRegex", "TD_LT", "In", "Search"])
def test_names_are_case_insensitive(name):
    assert get_operator(name) is get_operator(name.lower())


def test_flags():
    assert not get_operator("exists").takes_pattern
    assert not get_operator("nexists").takes_pattern
    assert get_operator("search").is_search
    others = [n for n in ALIASES if n not in ("exists", "nexists", "search")]
    assert all(get_operator(n).takes_pattern and not get_operator(n).is_search for n in others)


def test_unknown_operator_suggests_the_closest_name():
    with pytest.raises(UnknownOperatorError) as raised:
        get_operator("equal")
    assert str(raised.value) == "unknown operator 'equal'; did you mean 'equals'?"
    with pytest.raises(UnknownOperatorError, match="did you mean 'matchregex'"):
        get_operator("match_regex")


def test_unknown_operator_without_close_match_lists_known_names():
    with pytest.raises(UnknownOperatorError) as raised:
        get_operator("qqqqzz")
    message = str(raised.value)
    assert message.startswith("unknown operator 'qqqqzz'; known operators: ")
    assert "timediff_lt" in message and "nin" in message


def test_non_string_operator_name_is_unknown():
    with pytest.raises(UnknownOperatorError, match="must be a name"):
        get_operator(None)


def test_registry_rejects_duplicates():
    taken = Operator("equals2", ("eq",), operators.equals)
    with pytest.raises(RegistryError, match="'eq' of 'equals2' is already taken by 'equals'"):
        operators._register(taken)
    # A rejected operator registers none of its names.
    with pytest.raises(UnknownOperatorError):
        get_operator("equals2")
    with pytest.raises(RegistryError, match="lower case"):
        operators._register(Operator("Shouty", (), operators.equals))


# --- equality ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "pattern", "expected"),
    [
        ("equals", "a", "a", True),
        ("eq", "a", "b", False),
        ("equals", 1, 1, True),
        ("equals", 1, 1.0, True),
        ("equals", 1, "1", False),
        ("equals", [1, 2], [1, 2], True),
        ("equals", {"a": 1}, {"a": 1}, True),
        ("equals", b"abc", "abc", True),
        ("equals", "abc", b"abc", True),
        ("equals", None, "x", False),
        ("equals", None, None, False),  # a None pattern never equals
        ("equals", "", "", True),
        ("nequals", "a", "b", True),
        ("neq", "a", "a", False),
        ("nequals", b"a", "a", False),
        ("nequals", None, None, False),  # nequals has no None guard in StackStorm
        ("nequals", "x", None, True),
        ("nequals", None, "x", True),
        ("iequals", "ABC", "abc", True),
        ("ieq", b"ABC", "abc", True),
        ("iequals", "abc", "abd", False),
        ("iequals", "abc", None, False),
    ],
)
def test_equality(name, value, pattern, expected):
    assert check(name, value, pattern) is expected


@pytest.mark.parametrize(
    ("value", "pattern", "reason"),
    [
        (5, "5", "iequals needs a string value, got int 5 (pattern str '5')"),
        (None, "a", "iequals needs a string value, got None"),
        ("a", 5, "iequals needs a string pattern, got int 5"),
        (["a"], "a", "got list ['a']"),
    ],
)
def test_iequals_type_mismatch(value, pattern, reason):
    with pytest.raises(CriterionTypeError) as raised:
        check("iequals", value, pattern)
    assert reason in str(raised.value)


# --- containment -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "pattern", "expected"),
    [
        ("contains", "hello world", "lo w", True),
        ("contains", "hello", "xyz", False),
        ("contains", ["a", "b"], "b", True),  # list membership, not substring
        ("contains", ["ab"], "a", False),
        ("contains", {"key": 1}, "key", True),  # mapping keys
        ("contains", b"hello", "ell", True),
        ("contains", "hello", b"ell", True),
        ("contains", "x", None, False),
        ("contains", None, None, False),
        ("ncontains", "hello", "xyz", True),
        ("ncontains", "hello", "ell", False),
        ("ncontains", ["a"], "b", True),
        ("ncontains", "x", None, False),
        ("icontains", "Hello World", "WORLD", True),
        ("icontains", b"Hello", "hell", True),
        ("icontains", "Hello", "bye", False),
        ("icontains", "x", None, False),
        ("incontains", "Hello", "BYE", True),
        ("incontains", "Hello", "HELL", False),
        ("incontains", "x", None, False),
        ("inside", "b", ["a", "b"], True),
        ("in", "c", ["a", "b"], False),
        ("inside", "ell", "hello", True),  # substring of the pattern
        ("inside", b"ell", "hello", True),
        ("inside", 2, [1, 2, 3], True),
        ("inside", None, [None], True),
        ("inside", None, ["a"], False),
        ("inside", "k", {"k": 1}, True),
        ("inside", "a", None, False),
        ("ninside", "c", ["a", "b"], True),
        ("nin", "a", ["a", "b"], False),
        ("ninside", "a", None, False),
    ],
)
def test_containment(name, value, pattern, expected):
    assert check(name, value, pattern) is expected


@pytest.mark.parametrize(
    ("name", "value", "pattern", "reason"),
    [
        ("contains", None, "a", "contains cannot look for pattern str 'a' in value None"),
        ("contains", 12, "1", "contains cannot look for pattern str '1' in value int 12"),
        ("contains", "abc", 1, "contains cannot look for pattern int 1 in value str 'abc'"),
        ("ncontains", None, "a", "ncontains cannot look for pattern str 'a'"),
        ("contains", {"a": 1}, ["a"], "contains cannot look for pattern list ['a']"),
        ("icontains", ["abc"], "a", "icontains needs a string value, got list ['abc']"),
        ("incontains", None, "a", "incontains needs a string value, got None"),
        ("inside", None, "abc", "inside cannot look for value None in pattern str 'abc'"),
        ("inside", "a", 5, "inside cannot look for value str 'a' in pattern int 5"),
        ("ninside", 1, "abc", "ninside cannot look for value int 1"),
    ],
)
def test_containment_type_mismatch(name, value, pattern, reason):
    with pytest.raises(CriterionTypeError) as raised:
        check(name, value, pattern)
    assert reason in str(raised.value)


# --- prefixes and suffixes --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "pattern", "expected"),
    [
        ("startswith", "refs/heads/main", "refs/heads/", True),
        ("startswith", "refs/tags/v1", "refs/heads/", False),
        ("startswith", b"refs/heads/x", "refs/", True),
        ("startswith", "x", None, False),
        ("istartswith", "REFS/heads", "refs/", True),
        ("istartswith", "abc", "B", False),
        ("endswith", "file.py", ".py", True),
        ("endswith", "file.py", ".PY", False),
        ("iendswith", "file.PY", ".py", True),
        ("iendswith", "x", None, False),
    ],
)
def test_prefix_suffix(name, value, pattern, expected):
    assert check(name, value, pattern) is expected


@pytest.mark.parametrize("name", ["startswith", "istartswith", "endswith", "iendswith"])
def test_prefix_suffix_type_mismatch(name):
    with pytest.raises(CriterionTypeError, match=f"{name} needs a string value, got None"):
        check(name, None, "a")
    with pytest.raises(CriterionTypeError, match=f"{name} needs a string pattern, got list"):
        check(name, "abc", ["a", "b"])
    with pytest.raises(CriterionTypeError, match="got int 123"):
        check(name, 123, "1")


# --- ordering ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "pattern", "expected"),
    [
        ("lessthan", 1, 2, True),
        ("lt", 2, 2, False),
        ("lessthan", 1.5, 2, True),
        ("lessthan", "a", "b", True),  # strings compare lexically, as in Python
        ("lessthan", 1, None, False),
        ("lessthan", None, None, False),
        ("greaterthan", 3, 2, True),
        ("gt", 2, 2, False),
        ("greaterthan", "b", "a", True),
        ("greaterthan", 1, None, False),
        ("lessthan", b"a", b"b", True),
    ],
)
def test_ordering(name, value, pattern, expected):
    assert check(name, value, pattern) is expected


@pytest.mark.parametrize(
    ("name", "value", "pattern", "reason"),
    [
        ("lessthan", "5", 3, "lessthan cannot compare str '5' with int 3"),
        ("greaterthan", None, 3, "greaterthan cannot compare None with int 3"),
        ("lt", [1], 3, "lessthan cannot compare list [1] with int 3"),
        # StackStorm does not decode bytes for the comparisons.
        ("gt", b"b", "a", "greaterthan cannot compare bytes b'b' with str 'a'"),
    ],
)
def test_ordering_type_mismatch(name, value, pattern, reason):
    with pytest.raises(CriterionTypeError) as raised:
        check(name, value, pattern)
    assert str(raised.value) == reason


# --- patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "pattern", "expected"),
    [
        ("matchwildcard", "deploy-prod-7", "deploy-*-?", True),
        ("matchwildcard", "deploy-prod", "deploy-[ps]rod", True),
        ("matchwildcard", "Deploy", "deploy", False),  # case-sensitive
        ("matchwildcard", b"file.txt", "*.txt", True),
        ("matchwildcard", "x", None, False),
        # matchregex is anchored at the start (re.match) and '.' spans newlines.
        ("matchregex", "v1.2.3", r"v\d+", True),
        ("matchregex", "tag v1.2.3", r"v\d+", False),
        ("matchregex", "line1\nline2", "line1.line2", True),
        ("matchregex", "x", None, False),
        # regex searches anywhere; '.' does not span newlines.
        ("regex", "tag v1.2.3", r"v\d+", True),
        ("regex", "line1\nline2", "line1.line2", False),
        ("regex", "abc", "^b", False),
        ("regex", b"abc", "b", True),
        ("regex", "abc", b"b", True),
        ("regex", "ABC", "b", False),
        ("regex", "x", None, False),
        ("iregex", "ABC", "b", True),
        ("iregex", "ABC", "^abc$", True),
        ("iregex", "ABC", "d", False),
        ("iregex", "x", None, False),
    ],
)
def test_patterns(name, value, pattern, expected):
    assert check(name, value, pattern) is expected


@pytest.mark.parametrize("name", ["matchregex", "regex", "iregex"])
def test_invalid_regex_is_a_criterion_type_error(name):
    with pytest.raises(CriterionTypeError) as raised:
        check(name, "abc", "(unclosed")
    message = str(raised.value)
    assert f"{name} pattern '(unclosed' is not a valid regular expression" in message
    assert "missing )" in message


@pytest.mark.parametrize("name", ["matchwildcard", "matchregex", "regex", "iregex"])
def test_patterns_type_mismatch(name):
    with pytest.raises(CriterionTypeError, match=f"{name} needs a string value, got None"):
        check(name, None, "a")
    with pytest.raises(CriterionTypeError, match=f"{name} needs a string value, got int 42"):
        check(name, 42, "4")
    with pytest.raises(CriterionTypeError, match=f"{name} needs a string pattern, got int 4"):
        check(name, "42", 4)


def test_bytes_that_are_not_utf8_are_a_type_error():
    with pytest.raises(CriterionTypeError, match="equals: the value is bytes that are not UTF-8"):
        check("equals", b"\xff\xfe", "x")
    with pytest.raises(CriterionTypeError, match="regex: the pattern is bytes"):
        check("regex", "x", b"\xff")


# --- time ------------------------------------------------------------------------------

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "value", "seconds", "expected"),
    [
        ("timediff_lt", "2024-05-01T11:59:00Z", 120, True),  # 60 s old
        ("timediff_lt", "2024-05-01T11:59:00Z", 30, False),
        ("timediff_gt", "2024-05-01T11:59:00Z", 30, True),
        ("timediff_gt", "2024-05-01T11:59:00Z", 120, False),
        ("timediff_lt", "2024-05-01T11:59:00", 120, True),  # no zone: UTC
        ("timediff_lt", "2024-05-01T13:59:00+02:00", 120, True),  # zone honoured
        ("timediff_gt", "2024-05-01T11:59:00+02:00", 3600, True),  # 2h 1min old
        ("timediff_lt", "2024-05-01 11:59:59.500000", 1, True),
        ("timediff_lt", "2024-05-01T11:59:00Z", 60.5, True),
        ("timediff_gt", "2024-05-01T12:10:00Z", 0, False),  # in the future: negative age
        ("timediff_lt", datetime(2024, 5, 1, 11, 59, tzinfo=UTC), 120, True),
    ],
)
def test_timediff_against_a_given_now(name, value, seconds, expected):
    assert getattr(operators, name)(value, seconds, now=NOW) is expected


@pytest.mark.parametrize(
    ("name", "seconds", "expected"),
    [
        ("timediff_lt", "120", True),  # what StackStorm's web UI sends: a string
        ("timediff_lt", " 30 ", False),
        ("timediff_gt", "30", True),
        ("timediff_gt", "120.5", False),
        ("td_lt", "60.5", True),
    ],
)
def test_timediff_string_pattern_is_the_number(name, seconds, expected):
    # 60 s old at NOW
    operator = operators.get_operator(name)
    assert getattr(operators, operator.name)("2024-05-01T11:59:00Z", seconds, now=NOW) is expected


def test_timediff_against_the_real_clock():
    recent = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    assert check("td_lt", recent, 24 * 3600) is True
    assert check("td_gt", recent, 24 * 3600) is False
    assert check("td_gt", "2000-01-01T00:00:00Z", 60) is True
    assert check("td_lt", "2000-01-01T00:00:00Z", 60) is False


def test_timediff_none_pattern_is_false():
    assert check("timediff_lt", "2000-01-01T00:00:00Z", None) is False
    assert check("timediff_gt", None, None) is False


@pytest.mark.parametrize(
    ("value", "pattern", "reason"),
    [
        ("yesterday", 60, "timediff_lt cannot read 'yesterday' as an ISO 8601 timestamp"),
        (None, 60, "timediff_lt needs an ISO 8601 timestamp value, got None"),
        (1714564800, 60, "got int 1714564800"),
        ("2024-05-01T11:59:00Z", "sixty", "needs a number of seconds as pattern, got str 'sixty'"),
        ("2024-05-01T11:59:00Z", "nan", "needs a number of seconds as pattern, got str 'nan'"),
        ("2024-05-01T11:59:00Z", True, "needs a number of seconds as pattern, got bool"),
        ("2024-05-01T11:59:00Z", [60], "needs a number of seconds as pattern, got list"),
    ],
)
def test_timediff_type_mismatch(value, pattern, reason):
    with pytest.raises(CriterionTypeError) as raised:
        check("timediff_lt", value, pattern)
    assert reason in str(raised.value)


# --- existence -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "exists"),
    [(None, False), (0, True), ("", True), (False, True), ([], True), ("x", True)],
)
def test_exists_and_nexists_ignore_the_pattern(value, exists):
    assert check("exists", value, None) is exists
    assert check("exists", value, "anything") is exists
    assert check("nexists", value, None) is (not exists)
    assert get_operator("exists").func(value) is exists


def test_missing_field_from_a_path_feeds_operators_as_none():
    payload = {"trigger": {"body": {"state": "open"}}}
    missing = compile_key("trigger.body.absent#1")(payload)
    assert check("nexists", missing, None) is True
    assert check("equals", missing, "open") is False
    assert check("nequals", missing, "open") is True
    with pytest.raises(CriterionTypeError, match="got None"):
        check("iequals", missing, "open")


# --- search ---------------------------------------------------------------------------


def check_item(item, child_key, child_criterion):
    """A minimal evaluator: look the child key up in {"item": item}, apply the operator."""
    value = compile_key(child_key)({"item": item})
    operator = get_operator(child_criterion["type"])
    try:
        return operator.func(value, child_criterion.get("pattern"))
    except CriterionTypeError:
        return False


FIELDS = [
    {"field_name": "Status", "to_value": "Approved"},
    {"field_name": "Priority", "to_value": "High"},
]
BOTH_CHILDREN = {
    "item.field_name": {"type": "equals", "pattern": "Status"},
    "item.to_value": {"type": "equals", "pattern": "Approved"},
}
# No single item has field_name Priority and to_value Approved.
CROSSED_CHILDREN = {
    "item.field_name": {"type": "equals", "pattern": "Priority"},
    "item.to_value": {"type": "equals", "pattern": "Approved"},
}
# Each item passes one of these children.
EITHER_CHILD = {
    "item.field_name": {"type": "equals", "pattern": "Status"},
    "item.to_value": {"type": "equals", "pattern": "High"},
}
NEITHER_CHILD = {
    "item.field_name": {"type": "equals", "pattern": "Nope"},
    "item.to_value#x": {"type": "iequals", "pattern": "nope"},
}


@pytest.mark.parametrize(
    ("condition", "pattern", "expected"),
    [
        ("any", BOTH_CHILDREN, True),
        ("any", CROSSED_CHILDREN, False),
        ("all", BOTH_CHILDREN, False),
        ("all", {"item.field_name": {"type": "exists"}}, True),
        ("any2any", CROSSED_CHILDREN, True),
        ("any2any", NEITHER_CHILD, False),
        ("all2any", EITHER_CHILD, True),
        ("all2any", BOTH_CHILDREN, False),  # the Priority item passes neither child
        ("all2any", NEITHER_CHILD, False),
    ],
)
def test_search_conditions(condition, pattern, expected):
    search = get_operator("search").func
    assert search(FIELDS, pattern, condition, check_item) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [("any", False), ("all", True), ("any2any", False), ("all2any", True)],
)
def test_search_over_an_empty_list_follows_stackstorm(condition, expected):
    assert operators.search([], BOTH_CHILDREN, condition, check_item) is expected


def test_search_passes_each_item_and_child_to_check_item():
    seen = []

    def record(item, key, criterion):
        seen.append((item["field_name"], key, criterion["pattern"]))
        return True

    assert operators.search(FIELDS, BOTH_CHILDREN, "all", record) is True
    assert seen == [
        ("Status", "item.field_name", "Status"),
        ("Status", "item.to_value", "Approved"),
        ("Priority", "item.field_name", "Status"),
        ("Priority", "item.to_value", "Approved"),
    ]


@pytest.mark.parametrize("condition", ["some", "ANY", None, "count"])
def test_search_unknown_condition_names_the_valid_ones(condition):
    with pytest.raises(RuleError) as raised:
        operators.search(FIELDS, BOTH_CHILDREN, condition, check_item)
    assert not isinstance(raised.value, CriterionTypeError)
    assert "any, all, any2any, all2any" in str(raised.value)


def test_search_condition_suggestion():
    with pytest.raises(RuleError, match="did you mean 'any'"):
        operators.validate_search_condition("ANY")
    assert operators.validate_search_condition("all2any") == "all2any"


@pytest.mark.parametrize("value", [None, "abc", {"field_name": "Status"}, 5])
def test_search_needs_a_list(value):
    with pytest.raises(CriterionTypeError, match="search needs a list value"):
        operators.search(value, BOTH_CHILDREN, "any", check_item)


def test_search_needs_a_mapping_pattern():
    with pytest.raises(CriterionTypeError, match="search needs a pattern mapping"):
        operators.search(FIELDS, ["item.x"], "any", check_item)
