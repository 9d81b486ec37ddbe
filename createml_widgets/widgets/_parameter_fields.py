"""The controls of the parameter form, one class per kind of ModelParameters field.

Each reads its field's declaration (`field(metadata=...)`, see tasks/registry.py): "title", "createml",
"help", "hint", "range", "choices"; `value()` raises ValueError with a message for the person typing.
"""
from __future__ import annotations

import html
import math
import re

import ipywidgets as widgets

from ..data.split import MLSplitStrategy
from ..data.validation import ValidationData
from ..tasks.registry import number_text as _number_text

LABEL_WIDTH = "190px"
LATEST = "latest"  # the feature extractor choice for scene_print(revision=None)


def _title(name: str) -> str:
    return name.replace("_", " ").capitalize()


class _Field:
    """One parameter: its controls, its error label, and how to read a value from them.

    `meta`: the dataclass field's metadata — "title" (plain words), "createml" (Create ML's name, shown
    beside), "help" (the "?" explainer: what it does, when to change it), "range", "choices"."""

    def __init__(self, name: str, default, form, meta=None):
        self.name, self.default, self.form = name, default, form
        self.meta = dict(meta or {})
        self.error = widgets.HTML()
        self.error.add_class("cmlw-field-error")
        self.error.add_class(f"cmlw-field-error-{name}")

    def controls(self) -> list[widgets.Widget]:
        raise NotImplementedError

    def value(self):
        """The Python value; raises ValueError with a message for the user."""
        raise NotImplementedError

    def set_value(self, value) -> None:
        raise NotImplementedError

    def watch(self, *ws: widgets.Widget) -> None:
        for w in ws:
            w.observe(lambda _ch: self.form._validate_field(self.name), "value")

    def box(self) -> widgets.Widget:
        title = self.meta.get("title") or _title(self.name)
        createml = self.meta.get("createml")
        beside = f" <span class='cmlw-createml-name'>{html.escape(createml)}</span>" if createml else ""
        label = widgets.HTML(f"<b>{html.escape(title)}</b>{beside}", layout=widgets.Layout(width=LABEL_WIDTH))
        label.add_class("cmlw-field-label")
        hint = None if self.meta.get("help") else self.meta.get("hint")
        parts: list[widgets.Widget] = [label, *self.controls()]
        if hint:
            parts.append(widgets.HTML(f"<span style='color:#6e6e73;font-size:12px'>{html.escape(hint)}</span>"))
        row = widgets.HBox(parts, layout=widgets.Layout(align_items="center", flex_flow="row wrap"))
        rows: list[widgets.Widget] = [row]
        if self.meta.get("help"):  # a click (or a tap) opens it: no hover needed on a phone
            explainer = widgets.HTML(f"<details class='cmlw-help cmlw-help-{self.name}'><summary "
                                     f"aria-label='what is {html.escape(title)}?'>?</summary>"
                                     f"{html.escape(self.meta['help'])}</details>")
            explainer.add_class("cmlw-help-box")
            rows.append(explainer)
        out = widgets.VBox([*rows, self.error])
        out.add_class("cmlw-field")
        out.add_class(f"cmlw-field-{self.name}")
        return out


class _NumberField(_Field):
    def __init__(self, name, default, form, lo, hi, integer: bool):
        super().__init__(name, default, form)
        self.lo, self.hi, self.integer = lo, hi, integer
        self.input = widgets.Text(value=_number_text(default), continuous_update=True,
                                  placeholder=f"{_number_text(lo)}–{_number_text(hi)}",
                                  layout=widgets.Layout(width="110px"))
        self.input.add_class(f"cmlw-param-{name}")
        self.range = widgets.HTML(f"<span style='color:#6e6e73'>{_number_text(lo)} … {_number_text(hi)} "
                                  f"(default {_number_text(default)})</span>")
        self.watch(self.input)

    def controls(self):
        return [self.input, self.range]

    def value(self):
        text = self.input.value.strip().replace("_", "")
        kind = "a whole number" if self.integer else "a number"
        if not text:
            raise ValueError(f"enter {kind} from {_number_text(self.lo)} to {_number_text(self.hi)}")
        try:
            number = int(text) if self.integer else float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {kind}; enter one from {_number_text(self.lo)} "
                             f"to {_number_text(self.hi)}") from None
        if not math.isfinite(number) or not self.lo <= number <= self.hi:
            raise ValueError(f"{text} is out of range: enter {kind} from {_number_text(self.lo)} "
                             f"to {_number_text(self.hi)}")
        return number

    def set_value(self, value):
        self.input.value = _number_text(value)


class _BoolField(_Field):
    def __init__(self, name, default, form):
        super().__init__(name, default, form)
        self.input = widgets.Checkbox(value=bool(default), indent=False)
        self.input.add_class(f"cmlw-param-{name}")
        self.watch(self.input)

    def controls(self):
        return [self.input]

    def value(self):
        return bool(self.input.value)

    def set_value(self, value):
        self.input.value = bool(value)


class _FlagField(_Field):
    """Checkboxes, one per member of an enum.Flag (augmentation options)."""

    def __init__(self, name, default, form):
        super().__init__(name, default, form)
        self.flag_type = type(default)
        self.boxes = {}
        for member in self.flag_type:
            cb = widgets.Checkbox(value=member in default, description=member.name.replace("_", " ").lower(),
                                  indent=False, layout=widgets.Layout(width="auto", margin="0 12px 0 0"))
            cb.add_class(f"cmlw-param-{name}-{member.name.lower()}")
            self.boxes[member] = cb
        self.watch(*self.boxes.values())

    def controls(self):
        return [widgets.HBox(list(self.boxes.values()), layout=widgets.Layout(flex_flow="row wrap"))]

    def value(self):
        out = self.flag_type(0)
        for member, cb in self.boxes.items():
            if cb.value:
                out |= member
        return out

    def set_value(self, value):
        for member, cb in self.boxes.items():
            cb.value = member in value


class _EnumField(_Field):
    def __init__(self, name, default, form, meta=None):
        super().__init__(name, default, form, meta)
        members = list(type(default))
        choices = self.meta.get("choices", {})
        self.input = widgets.Dropdown(options=[(choices.get(m.name, str(m.name).replace("_", " ")), m)
                                               for m in members], value=default,
                                      layout=widgets.Layout(width="auto"))
        self.input.add_class(f"cmlw-param-{name}")
        self.watch(self.input)

    def controls(self):
        return [self.input]

    def value(self):
        return self.input.value

    def set_value(self, value):
        self.input.value = value


class _FixedField(_Field):
    """A parameter the form cannot edit: shown, and kept at its value."""

    def __init__(self, name, default, form):
        super().__init__(name, default, form)
        self.current = default
        self.label = widgets.HTML(f"<code>{html.escape(str(default))}</code>")

    def controls(self):
        return [self.label]

    def value(self):
        return self.current

    def set_value(self, value):
        self.current = value
        self.label.value = f"<code>{html.escape(str(value))}</code>"


class _ValidationField(_Field):
    """automatic split / fixed ratio (+ seed) / none; a ValidationData given in code is kept as-is."""

    def __init__(self, name, default, form):
        super().__init__(name, default, form)
        self.kept = None
        self.choice = widgets.Dropdown(options=[("automatic split", "automatic"), ("fixed ratio", "fixed"),
                                                ("none", "none")], value="automatic",
                                       layout=widgets.Layout(width="170px"))
        self.choice.add_class("cmlw-param-validation")
        self.ratio = widgets.Text(value="0.1", description="share", placeholder="20%", continuous_update=True,
                                  layout=widgets.Layout(width="150px"))
        self.ratio.add_class("cmlw-param-validation-ratio")
        self.seed = widgets.Text(value="", description="seed", placeholder="random", continuous_update=True,
                                 layout=widgets.Layout(width="150px"))
        self.seed.add_class("cmlw-param-validation-seed")
        self.hint = widgets.HTML()
        self.watch(self.choice, self.ratio, self.seed)
        self.choice.observe(lambda _ch: self._show(), "value")
        self.set_value(default)

    def _show(self):
        fixed = self.choice.value == "fixed"
        for w in (self.ratio, self.seed):
            w.layout.display = None if fixed else "none"
        hints = {"automatic": "Create ML's rule: under 50 examples none, under 200 10%, else 5%",
                 "none": "no validation metrics", "fixed": "held out from each label",
                 "kept": "as given in code"}
        self.hint.value = f"<span style='color:#6e6e73;font-size:12px'>{hints.get(self.choice.value, '')}</span>"

    def controls(self):
        return [self.choice, self.ratio, self.seed, self.hint]

    def value(self):
        kind = self.choice.value
        if kind == "kept":
            return self.kept
        if kind == "none":
            return ValidationData.none()
        if kind == "automatic":
            return ValidationData.split(MLSplitStrategy.automatic())
        ratio = parse_ratio(self.ratio.value)
        seed_text = self.seed.value.strip()
        seed = None
        if seed_text:
            try:
                seed = int(seed_text)
            except ValueError:
                raise ValueError(f"seed {seed_text!r} is not a whole number; leave it empty for a random split") from None
            if seed < 0:
                raise ValueError("seed must be 0 or more")
        return ValidationData.split(MLSplitStrategy.fixed(ratio, seed))

    def set_value(self, value):
        options = [o for o in self.choice.options if o[1] != "kept"]
        if value.kind == "split" and value.strategy is not None and value.strategy.kind == "fixed":
            self.ratio.value = _number_text(value.strategy.ratio)
            self.seed.value = "" if value.strategy.seed is None else str(value.strategy.seed)
            kind = "fixed"
        elif value.kind == "split":
            kind = "automatic"
        elif value.kind == "none":
            kind = "none"
        else:
            self.kept = value
            options.append((f"{value.kind.replace('_', ' ')} (from code)", "kept"))
            kind = "kept"
        self.choice.options = options
        self.choice.value = kind
        self._show()


def parse_ratio(text: str) -> float:
    """A share of the examples: "0.2", "20%" or "20" (read as percent: a share is below 1)."""
    text = text.strip()
    percent = text.endswith("%")
    number = text.removesuffix("%").strip()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"ratio {text!r} is not a number; enter a share between 0 and 1 such as 0.2, "
                         "or a percentage such as 20%") from None
    if percent or 1.0 < value < 100.0:
        value /= 100.0
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError(f"ratio {text} is out of range: enter a share between 0 and 1 (exclusive) such as 0.2, "
                         "or a percentage such as 20%")
    return value


class _ImageAlgorithmField(_Field):
    """transfer_learning(feature extractor, classifier): revision dropdown, classifier, MLP layer sizes."""

    def __init__(self, name, default, form):
        super().__init__(name, default, form)
        from ..features.image_embedding import SCENE_PRINT_BACKBONES

        self.task_class = form.task_class
        plain = {1: "standard image features", 2: "larger image features, slower"}
        options = [(f"{plain.get(rev, 'image features')} (scenePrint revision {rev})", rev)
                   for rev in sorted(SCENE_PRINT_BACKBONES)]
        options.append(("newest image features (scenePrint, latest revision)", LATEST))  # not None: a Dropdown shows None as no choice
        self.kept_extractor = None
        self.base_options = options
        self.extractor = widgets.Dropdown(options=options, layout=widgets.Layout(width="330px"))
        self.extractor.add_class("cmlw-param-feature-extractor")
        self.classifier = widgets.Dropdown(options=[("simple (logistic regressor)", "logistic_regressor"),
                                                    ("neural network (multilayer perceptron)",
                                                     "multilayer_perceptron")],
                                           layout=widgets.Layout(width="300px"))
        self.classifier.add_class("cmlw-param-classifier")
        self.layers = widgets.Text(value="128, 64", description="layers", placeholder="128, 64",
                                   continuous_update=True, layout=widgets.Layout(width="200px"))
        self.layers.add_class("cmlw-param-layer-sizes")
        self.watch(self.extractor, self.classifier, self.layers)
        self.classifier.observe(lambda _ch: self._show(), "value")
        self.set_value(default)

    def _show(self):
        self.layers.layout.display = None if self.classifier.value == "multilayer_perceptron" else "none"

    def controls(self):
        return [widgets.VBox([self.extractor, widgets.HBox([self.classifier, self.layers])])]

    def layer_sizes(self) -> tuple[int, ...]:
        text = self.layers.value.strip()
        parts = [p for p in re.split(r"[,\s;]+", text) if p]
        if not parts:
            raise ValueError("enter the hidden layer sizes, e.g. 128, 64")
        sizes = []
        for p in parts:
            if not p.isdigit() or int(p) < 1 or int(p) > 65536:
                raise ValueError(f"layer size {p!r} is not a whole number from 1 to 65536; e.g. 128, 64")
            sizes.append(int(p))
        return tuple(sizes)

    def value(self):
        cls = self.task_class
        fe = (self.kept_extractor if self.extractor.value == "kept"
              else cls.FeatureExtractorType.scene_print(None if self.extractor.value == LATEST
                                                        else self.extractor.value))
        if self.classifier.value == "multilayer_perceptron":
            classifier = cls.ClassifierType.multilayer_perceptron(self.layer_sizes())
        else:
            classifier = cls.ClassifierType.logistic_regressor()
        return cls.ModelAlgorithmType.transfer_learning(fe, classifier)

    def set_value(self, value):
        fe, classifier = value.feature_extractor, value.classifier
        options = list(self.base_options)
        choice = LATEST if fe.revision is None else fe.revision
        if fe.kind == "scene_print" and choice in [o[1] for o in options]:
            self.extractor.options = options
            self.extractor.value = choice
        else:
            self.kept_extractor = fe
            options.append((f"{fe} (from code)", "kept"))
            self.extractor.options = options
            self.extractor.value = "kept"
        self.classifier.value = classifier.kind
        if classifier.layer_sizes:
            self.layers.value = ", ".join(str(s) for s in classifier.layer_sizes)
        self._show()
