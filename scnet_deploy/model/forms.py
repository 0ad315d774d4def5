"""The names of the deploy forms (``shift[+rewrite...]``), without PyTorch: what options, the autotuner and the
build session pass around. The rewrites themselves are in ``rewrites``."""

from dataclasses import dataclass

from ..errors import ExportError
from ..options import DEFAULT_SHIFT
FOLD = "fold"  # the shift folded into the following 1x1 conv: one sparse 3x3 conv
SHIFT_CHOICES = ("dwconv", "slice", FOLD)  # shift.SHIFT_FORMS, sorted, then fold (a test holds them equal)


@dataclass(frozen=True)
class DeployOptions:
    shift: str = DEFAULT_SHIFT  # "slice" (pad + slices + concat), "dwconv" (depthwise one-hot 3x3) or "fold"
    conv_before_upsample: bool = False
    upsample_as_deconv: bool = False
    skip_as_conv: bool = False

    @property
    def name(self) -> str:
        """A short name for this form, as the autotuner's records and the benchmark tables show it:
        ``shift[+rewrite...]``, rewrites in REWRITE_FLAGS order."""
        return "+".join([self.shift, *(flag for flag in REWRITE_FLAGS if getattr(self, flag))])

    @classmethod
    def from_name(cls, name: str) -> "DeployOptions":
        shift, *flags = name.split("+")
        check_shift(shift)
        unknown = [f for f in flags if f not in REWRITE_FLAGS]
        if unknown:
            raise ExportError(f"form {name!r}: {unknown} are not rewrites; a form is shift[+rewrite...] with shift in "
                              f"{list(SHIFT_CHOICES)} and rewrites from {list(REWRITE_FLAGS)}.")
        return cls(shift, **{f: True for f in flags})


REWRITE_FLAGS = ("conv_before_upsample", "upsample_as_deconv", "skip_as_conv")


def check_shift(form: str) -> None:
    if form not in SHIFT_CHOICES:
        raise ExportError(f"--shift {form!r} is not a shift form; choose one of {list(SHIFT_CHOICES)}.")
