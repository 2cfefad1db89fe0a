"""URL templates: each inserted value is encoded for the URL component it lands in."""

from __future__ import annotations

import pytest

from engine.errors import TemplateError
from engine.rules.parameter_kinds import SHELL_COMMAND, URL, kinds_for_runner, render_parameter
from engine.rules.url_quoting import render_url, url_template_source


def body(**values: object) -> dict:
    return {"trigger": {"body": values}}


def test_path_value_cannot_leave_its_segment():
    url = render_url(
        "http://h/items/{{ trigger.body.id }}?token=t", body(id="../../admin/delete?all=1#")
    )
    assert url == "http://h/items/..%2F..%2Fadmin%2Fdelete%3Fall%3D1%23?token=t"


@pytest.mark.parametrize("value", [".", ".."])
def test_dot_segment_values_are_refused(value):
    with pytest.raises(TemplateError, match="segment"):
        render_url("http://h/items/{{ trigger.body.id }}/x", body(id=value))


def test_two_values_making_a_dot_segment_together_are_refused():
    with pytest.raises(TemplateError, match=r"'\.\.' segment"):
        render_url("http://h/{{ trigger.body.a }}{{ trigger.body.b }}/x", body(a=".", b="."))
    assert render_url("http://h/a.{{ trigger.body.b }}", body(b=".")) == "http://h/a.."


@pytest.mark.parametrize(
    "source",
    [
        "http://h/items/{% if trigger.body.q %}?{% endif %}{{ trigger.body.id }}?token=t",
        "http://h/a{% for i in [] %}#{% endfor %}/{{ trigger.body.id }}/x",
    ],
)
def test_a_dot_segment_is_refused_when_a_block_not_taken_holds_a_query_mark(source):
    # The compile-time scan reads the branch's '?' or '#' as if it were always there and
    # took the value for a query or fragment value, so its '..' went unchecked.
    with pytest.raises(TemplateError, match=r"'\.\.' segment"):
        render_url(source, body(id="..", q=False))


def test_a_percent_in_a_value_stays_data():
    assert render_url("http://h/{{ trigger.body.a }}", body(a="%2e%2e")) == "http://h/%252e%252e"


def test_query_names_and_values_cannot_add_parameters():
    url = render_url(
        "http://h/s?{{ trigger.body.k }}={{ trigger.body.v }}&token=t",
        body(k="a=b&admin", v="x&admin=1 +#"),
    )
    assert url == "http://h/s?a%3Db%26admin=x%26admin%3D1%20%2B%23&token=t"


def test_fragment_value_is_encoded():
    url = render_url("http://h/p#{{ trigger.body.f }}", body(f="x y?#z"))
    assert url == "http://h/p#x%20y%3F%23z"


def test_host_values_are_plain_host_characters():
    assert render_url("https://{{ trigger.body.h }}:8443/x", body(h="api-2.example.com")) == (
        "https://api-2.example.com:8443/x"
    )
    assert render_url("https://h:{{ trigger.body.p }}/x", body(p=8443)) == "https://h:8443/x"
    for bad in ("evil.com/", "evil.com#", "user@evil.com", "evil.com:80", "a b"):
        with pytest.raises(TemplateError, match="scheme, host or port"):
            render_url("https://{{ trigger.body.h }}/x", body(h=bad))


def test_whole_url_template_is_validated_as_a_url():
    assert render_url("{{ trigger.body.cb }}", body(cb="https://x.example/cb?a=1#f")) == (
        "https://x.example/cb?a=1#f"
    )
    assert render_url("  {{ trigger.body.cb }} ", body(cb="http://x/")) == "http://x/"
    for bad in ("file:///etc/passwd", "x.example/cb", "http://", "http://a b/", "http://h:99999/"):
        with pytest.raises(TemplateError, match="URL"):
            render_url("{{ trigger.body.cb }}", body(cb=bad))
    with pytest.raises(TemplateError, match="cannot be inserted"):
        render_url("{{ trigger.body.cb }}", {"trigger": {"body": {"cb": range}}})


def test_base_url_at_the_start_is_validated_and_the_rest_encoded():
    url = render_url(
        "{{ trigger.body.base }}/items/{{ trigger.body.id }}",
        body(base="https://api.example.com/v1", id="a/b"),
    )
    assert url == "https://api.example.com/v1/items/a%2Fb"
    with pytest.raises(TemplateError, match="query or fragment"):
        render_url("{{ trigger.body.base }}/x", body(base="https://h/?a=1"))
    with pytest.raises(TemplateError, match="absolute"):
        render_url("{{ trigger.body.base }}/x", body(base="/relative"))


def test_unquoted_is_the_opt_out():
    url = render_url("http://h/{{ trigger.body.p | unquoted }}", body(p="a/b?c=d#e"))
    assert url == "http://h/a/b?c=d#e"
    assert "unquoted }}" in url_template_source("{{ x | unquoted }}/{{ y }}")
    # Only the outermost filter opts out.
    assert render_url("http://h/{{ trigger.body.p | unquoted | upper }}", body(p="a/b")) == (
        "http://h/A%2FB"
    )


def test_blocks_keep_the_component_of_the_text_around_them():
    source = (
        "http://h/{% if trigger.body.x %}x/{% endif %}{{ trigger.body.id }}?q={{ trigger.body.q }}"
    )
    assert render_url(source, body(x=1, id="a/b", q="&")) == "http://h/x/a%2Fb?q=%26"


def test_a_url_without_template_is_returned_as_is():
    assert render_url("http://h/a b", {}) == "http://h/a b"


def test_errors_name_the_original_template():
    with pytest.raises(TemplateError, match=r"URL template 'http://h/\{\{ trigger.body.id \}\}'"):
        render_url("http://h/{{ trigger.body.id }}", body())
    with pytest.raises(TemplateError, match="syntax"):
        render_url("http://h/{{ trigger.body.id ", body())


def test_parameter_kinds_by_runner():
    assert kinds_for_runner("http-request") == {"url": URL}
    assert kinds_for_runner("sendwebhook") == {"url": URL}
    assert kinds_for_runner("local-shell-cmd") == {"cmd": SHELL_COMMAND}
    assert kinds_for_runner("python-script") == {}
    assert kinds_for_runner(None) == {}
    assert render_parameter(URL, "http://h/{{ x }}", {"x": "a b"}) == "http://h/a%20b"
    assert render_parameter(None, "http://h/{{ x }}", {"x": "a b"}) == "http://h/a b"
    assert render_parameter(URL, {"a": "{{ x }}"}, {"x": "a b"}) == {"a": "a b"}
