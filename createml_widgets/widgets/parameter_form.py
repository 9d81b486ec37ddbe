"""ParameterForm: a form generated from a task's ModelParameters dataclass, validated as you type.

Every dataclass field gets a control chosen by its default's type and its declaration (tasks/registry.py:
a number box with its declared range, checkboxes for an augmentation Flag, a validation-split chooser, the image feature extractor
and classifier, a dropdown for other enums) and an error label. `form.parameters` is the
task's ModelParameters, or raises InvalidParametersError naming every field that is wrong.
"""
from __future__ import annotations

import dataclasses
import enum
import html
from typing import TYPE_CHECKING

import ipywidgets as widgets
import traitlets

from ..data.validation import ValidationData
from ..errors import ParameterError
from ..tasks.registry import declared_fields, field_default
from ._look import marker_html
from ._parameter_fields import (  # noqa: F401 - LATEST and parse_ratio are part of this module's names
    LATEST,
    _BoolField,
    _EnumField,
    _Field,
    _FixedField,
    _FlagField,
    _ImageAlgorithmField,
    _NumberField,
    _ValidationField,
    parse_ratio,
)
from ._tasks import task_info

if TYPE_CHECKING:
    from ..tasks._base import AnyModelParameters, ClassifierTask
    from ._tasks import TaskInfo


class InvalidParametersError(ValueError):
    """The form holds values that do not make valid parameters; `errors` maps field to message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = dict(errors)
        super().__init__("invalid parameters: " + "; ".join(f"{k}: {v}" for k, v in self.errors.items()))


def _field_for(f: dataclasses.Field, default, form: ParameterForm) -> _Field:
    name = f.name
    if isinstance(default, ValidationData):
        fld = _ValidationField(name, default, form)
    elif isinstance(default, enum.Flag):
        fld = _FlagField(name, default, form)
    elif isinstance(default, bool):
        fld = _BoolField(name, default, form)
    elif isinstance(default, (int, float)):
        lo, hi = f.metadata.get("range") or (1, 10**6)  # the declared range (validate() checks the same)
        fld = _NumberField(name, default, form, lo, hi, integer=isinstance(default, int))
    elif hasattr(default, "feature_extractor") and hasattr(default, "classifier"):
        fld = _ImageAlgorithmField(name, default, form)
    elif isinstance(default, enum.Enum):
        return _EnumField(name, default, form, f.metadata)
    else:
        fld = _FixedField(name, default, form)
    fld.meta = dict(f.metadata)
    return fld


class ParameterForm(widgets.VBox):
    """Edit a task's ModelParameters. `form.parameters` gives them (or raises InvalidParametersError).

    >>> form = ParameterForm("image")
    >>> form.fields["max_iterations"].input.value = "0"
    >>> form.errors["max_iterations"]
    '0 is out of range: enter a whole number from 1 to 100000'
    """

    valid = traitlets.Bool(True)
    errors = traitlets.Dict()

    def __init__(self, task: str | type | ClassifierTask | TaskInfo = "image",
                 parameters: AnyModelParameters | None = None, **kwargs: object):
        self.task = task_info(task)
        self.task_class = self.task.load()
        params_type = self.task_class.ModelParameters
        self._building = True
        self.fields: dict[str, _Field] = {f.name: _field_for(f, field_default(f), self)
                                          for f in declared_fields(params_type)}
        self.form_error = widgets.HTML()
        self.form_error.add_class("cmlw-form-error")
        self.reset_button = widgets.Button(description="Defaults", icon="undo",
                                           tooltip="Create ML's default parameters")
        self.reset_button.add_class("cmlw-form-reset")
        self.reset_button.on_click(lambda _b: self.reset())
        header = widgets.HTML("<b>How to train</b> <span class='cmlw-createml-name'>"
                              f"({html.escape(self.task.class_name)}.ModelParameters)</span>")
        super().__init__(children=[header, *[fld.box() for fld in self.fields.values()], self.form_error,
                                   self.reset_button], **kwargs)
        self.add_class("cmlw-parameter-form")
        self._building = False
        if parameters is not None:
            self.set_parameters(parameters)
        self._validate_all()

    # -- values ------------------------------------------------------------------------------
    @property
    def parameters(self) -> AnyModelParameters:
        """The task's ModelParameters from the form; InvalidParametersError if a field is wrong."""
        errors, values = {}, {}
        for name, fld in self.fields.items():
            try:
                values[name] = fld.value()
            except ValueError as err:
                errors[name] = str(err)
        if errors:
            raise InvalidParametersError(errors)
        params = self.task_class.ModelParameters(**values)
        try:
            params.validate()
        except ParameterError as err:  # the library's own checks, mapped to the field they concern
            field_name = next((n for n in self.fields if err.name.startswith(n) or n in err.name), "_form")
            raise InvalidParametersError({field_name: str(err)}) from err
        except ValueError as err:
            raise InvalidParametersError({"_form": str(err)}) from err
        return params

    @property
    def is_valid(self) -> bool:
        """True when every field holds an allowed value."""
        return not self._collect_errors()

    def set_parameters(self, parameters: AnyModelParameters) -> None:
        """Show `parameters` (a ModelParameters of this task) in the form."""
        if not isinstance(parameters, self.task_class.ModelParameters):
            raise TypeError(f"expected {self.task.class_name}.ModelParameters, got {type(parameters).__name__}")
        self._building = True
        try:
            for name, fld in self.fields.items():
                fld.set_value(getattr(parameters, name))
        finally:
            self._building = False
        self._validate_all()

    def reset(self) -> None:
        """Back to Create ML's defaults."""
        self.set_parameters(self.task_class.ModelParameters())

    # -- validation --------------------------------------------------------------------------
    def _collect_errors(self) -> dict[str, str]:
        errors = {}
        for name, fld in self.fields.items():
            try:
                fld.value()
            except ValueError as err:
                errors[name] = str(err)
        if not errors:
            try:
                self.parameters  # noqa: B018 - the library's cross-field checks
            except InvalidParametersError as err:
                errors.update(err.errors)
        return errors

    def _validate_field(self, name: str) -> None:
        if not self._building:
            self._validate_all()

    def _validate_all(self) -> None:
        errors = self._collect_errors()
        for name, fld in self.fields.items():
            msg = errors.get(name, "")
            fld.error.value = (f"<span style='color:#c62828;font-size:12px'>{marker_html('error')}"
                               f"{html.escape(msg)}</span>" if msg else "")
        form_msg = errors.get("_form", "")
        self.form_error.value = (f"<span style='color:#c62828'>{marker_html('error')}{html.escape(form_msg)}</span>"
                                 if form_msg else "")
        self.errors = errors
        self.valid = not errors
