"""What the widgets look like in a browser without an emoji font (Debian's Chromium): no emoji anywhere,
problems marked with CSS tags, disabled buttons that look disabled, a preview photo at its full size."""
from __future__ import annotations

import re

import ipywidgets as widgets
from widget_helpers import copy_photos

from createml_widgets.widgets import DataSourcePicker, ParameterForm, TrainerApp

# Emoji and pictographs (📁 …), the miscellaneous symbols block (⚠ ⛔ …) and the emoji presentation
# selector (U+FE0F, as in ⚠️). Debian's fonts have none of them: each is an empty box there.
EMOJI = re.compile("[\U0001F000-\U0001FFFF\u2600-\u26FF\uFE0F]")


def shown_strings(widget) -> list[str]:
    """Every text a widget tree sends to the browser: HTML values, descriptions, option labels, tooltips."""
    out, todo = [], [widget]
    while todo:
        w = todo.pop()
        for name in ("value", "description", "tooltip", "placeholder"):
            v = getattr(w, name, None) if w.has_trait(name) else None
            if isinstance(v, str):
                out.append(v)
        if isinstance(w, widgets.widgets.widget_selection._Selection):
            out += [str(label) for label in w._options_labels]
        todo += [c for c in getattr(w, "children", ()) if isinstance(c, widgets.Widget)]
    return out


def test_no_emoji_in_folders_problems_or_form_errors(tmp_path):
    copy_photos(tmp_path / "one", labels=("3",), per_label=3)  # an error (one label) and a warning (few)
    (tmp_path / "one" / "3" / "broken.jpg").write_bytes(b"not a photo" * 20)  # a warning (unreadable)
    copy_photos(tmp_path / "digits", per_label=3)
    app = TrainerApp(root=tmp_path)
    picker = app.picker
    assert [label for label, _ in picker.folders.options] == ["digits/   (9 files)", "one/   (4 files)"]
    picker.navigate("one")
    levels = [p["level"] for p in picker.problems]
    assert "error" in levels and "warning" in levels
    html = picker.problems_html.value
    for level in ("error", "warning"):  # each problem carries a tag drawn with CSS and letters
        tags = re.findall(rf"<li class='cmlw-problem cmlw-problem-{level}'[^>]*><span class='cmlw-marker "
                          rf"cmlw-marker-{level}'[^>]*>{level}</span>", html)
        assert len(tags) == levels.count(level)
    app.form.fields["max_iterations"].input.value = "zero"  # a field error
    assert "cmlw-marker-error" in app.form.fields["max_iterations"].error.value
    texts = shown_strings(app)
    assert any("broken.jpg" in t for t in texts) and any("zero" in t or "max_iterations" in t for t in texts)
    bad = sorted({ch for t in texts for ch in EMOJI.findall(t)})
    assert not bad, f"characters that need an emoji font: {bad}"


def test_the_picker_and_form_alone_show_no_emoji_either():
    picker = DataSourcePicker("hand_action")  # the bundled clips
    form = ParameterForm("hand_action")
    for w in (picker, form):
        assert not [t for t in shown_strings(w) if EMOJI.search(t)]
    assert picker.ready and all(not EMOJI.search(label) for label, _ in picker.folders.options)
