import pytest

from engine.errors import FieldPathError, RuleError
from engine.rules.fields import compile_key, strip_suffix

PAYLOAD = {
    "body": {
        "x": 1,
        "zero": 0,
        "empty": "",
        "flag": False,
        "null": None,
        "commits": [
            {"id": "c1", "author": {"name": "ada"}, "added": ["a.py"]},
            {"id": "c2", "author": {"name": "bob"}, "added": []},
        ],
        "by_digit": {"0": "zero-key", "12": "twelve-key"},
        "a.b": "dotted-name",
        "it's": "quoted",
    },
    "headers": {"X-Custom-Header": "custom", "X-Github-Event": "push", "a#b": "hash"},
    "list": [10, 20, 30],
    "nested": [[1, 2], [3, 4]],
    "text": "abc",
}
CONTEXT = {"trigger": PAYLOAD}


def lookup(key, context=CONTEXT):
    return compile_key(key)(context)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("trigger", PAYLOAD),
        ("trigger.body.x", 1),
        ("trigger.body.zero", 0),
        ("trigger.body.empty", ""),
        ("trigger.body.flag", False),
        ("trigger.headers['X-Custom-Header']", "custom"),
        ('trigger.headers["X-Custom-Header"]', "custom"),
        ("trigger.headers[ 'X-Custom-Header' ]", "custom"),
        ("trigger.headers.X-Github-Event", "push"),
        ("trigger.headers.'X-Github-Event'", "push"),
        ('trigger.headers."X-Github-Event"', "push"),
        ("trigger['headers']['X-Github-Event']", "push"),
        ("trigger.list[0]", 10),
        ("trigger.list[2]", 30),
        ("trigger.list[-1]", 30),
        ("trigger.list[ 1 ]", 20),
        ("trigger.nested[1][0]", 3),
        ("trigger.body.commits[0].author.name", "ada"),
        ("trigger.body.commits[1]['author'].name", "bob"),
        ("trigger.body.commits[0].added[0]", "a.py"),
        ("trigger.body['a.b']", "dotted-name"),
        ("trigger.body['it\\'s']", "quoted"),
        ("trigger.headers['a#b']", "hash"),
        # Digits after a dot: list index in a list, the string key in a mapping.
        ("trigger.list.0", 10),
        ("trigger.list.2", 30),
        ("trigger.body.commits.1.id", "c2"),
        ("trigger.body.by_digit.0", "zero-key"),
        ("trigger.body.by_digit.12", "twelve-key"),
        # The criteria tag is not part of the path.
        ("trigger.body.x#1", 1),
        ("trigger.body.x#upper bound", 1),
        ("  trigger.body.x  ", 1),
    ],
)
def test_plain_keys_find_the_field(key, expected):
    assert lookup(key) == expected


@pytest.mark.parametrize(
    "key",
    [
        "trigger.missing",
        "trigger.body.missing.deeper",
        "trigger.body.null",
        "trigger.body.null.x",
        "trigger.list[3]",
        "trigger.list[-4]",
        "trigger.list.3",
        "trigger.body.x.y",  # traversing a number
        "trigger.text.y",  # traversing a string
        "trigger.text[0]",  # strings are not lists
        "trigger.body[0]",  # mappings are not lists
        "trigger.list.name",  # a list has no named fields
        "trigger.body.by_digit.7",
        "trigger.body.commits[5].author.name",
        "item.field",  # root not in the context
        "st2kv.system.x",
    ],
)
def test_missing_fields_are_none(key):
    assert lookup(key) is None


def test_item_root_for_search_children():
    assert lookup("item.author.name", {"item": PAYLOAD["body"]["commits"][1]}) == "bob"
    assert lookup("item", {"item": 5}) == 5
    assert lookup("item.x", {"item": 5}) is None


def test_missing_root_value_is_none():
    assert lookup("trigger.body.x", {"trigger": None}) is None
    assert lookup("trigger.list[0]", {"trigger": None}) is None
    assert lookup("trigger.body.x", {}) is None


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("trigger.body.commits[*].author.name", ["ada", "bob"]),
        ("trigger.body.commits[?author.name=='bob'].id", ["c2"]),
        ("trigger.body.commits[?author.name=='bob'] | [0].id", "c2"),
        ("length(trigger.list)", 3),
        ("length(trigger.body.commits[0].added)", 1),
        ("trigger.list[0:2]", [10, 20]),
        ("trigger.nested[]", [1, 2, 3, 4]),
        ("contains(trigger.list, `20`)", True),
        ("max(trigger.list)", 30),
        ("trigger.body.commits[*].added[]", ["a.py"]),
        ("trigger.body.commits[?author.name=='zed'].id", []),
        ("trigger.missing[*].x", None),
        ("length(trigger.list)#count", 3),
        ("trigger.body.x && trigger.text", "abc"),
    ],
)
def test_jmespath_keys(key, expected):
    assert lookup(key) == expected


def test_jmespath_function_on_missing_field_is_none():
    # length(null) is a JMESPath type error; a missing field must never raise.
    assert lookup("length(trigger.missing)") is None
    assert lookup("length(trigger.body.x)") is None


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "is empty"),
        ("#only-a-tag", "is empty"),
        ("trigger..x", "position 8"),
        ("trigger.body.", "ends with a dot"),
        ("trigger.list[0", "unclosed '['"),
        ("trigger.headers['X-Custom", "unclosed quote"),
        ("trigger.list[abc]", "neither a list index nor a quoted name"),
        ("trigger.body x", "unexpected ' '"),
        ("trigger.list[?x==", "invalid JMESPath"),
        ("length(trigger.list", "invalid JMESPath"),
    ],
)
def test_bad_keys_raise_field_path_error_naming_the_key(key, fragment):
    with pytest.raises(FieldPathError) as raised:
        compile_key(key)
    message = str(raised.value)
    assert repr(key) in message
    assert fragment in message
    assert isinstance(raised.value, RuleError)


def test_non_string_key_is_a_field_path_error():
    with pytest.raises(FieldPathError, match="must be a string"):
        compile_key(12)


def test_compiled_once_and_reused():
    assert compile_key("trigger.body.x") is compile_key("trigger.body.x")
    assert compile_key("length(trigger.list)") is compile_key("length(trigger.list)")


def test_lookup_reads_the_context_each_call():
    find = compile_key("trigger.body.state")
    assert find({"trigger": {"body": {"state": "open"}}}) == "open"
    assert find({"trigger": {"body": {"state": "closed"}}}) == "closed"


def test_values_are_returned_not_copied():
    assert lookup("trigger.body.commits") is PAYLOAD["body"]["commits"]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("trigger.n#1", "trigger.n"),
        ("trigger.n#2", "trigger.n"),
        ("trigger.payload.level#upper", "trigger.payload.level"),
        ("trigger.n", "trigger.n"),
        ("trigger.headers['a#b']", "trigger.headers['a#b']"),
        ("trigger.headers['a#b']#tag", "trigger.headers['a#b']"),
        ('trigger.headers["it\\"s#"]#t', 'trigger.headers["it\\"s#"]'),
        ("trigger.n#1#2", "trigger.n"),
    ],
)
def test_strip_suffix(key, expected):
    assert strip_suffix(key) == expected
