"""Reference forecasts behind the learned models' interface: persistence and optical-flow extrapolation.

Neither has parameters (``trainable = False``).  Their :meth:`training_loss`
returns the masked MSE of their forecast as a tensor that does not require a
gradient, so an evaluation loop can score them like any model; a trainer must
check ``trainable`` before calling ``backward``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from geostp.errors import ConfigError
from geostp.models.base import Forecaster, check_float, check_int, register_model
from geostp.models.objectives import masked_mse

__all__ = ["Persistence", "OpticalFlow"]


class _Baseline(Forecaster):
    trainable = False

    def training_loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        iteration: int = 0,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked MSE of the forecast; the tensor has no gradient (nothing to train)."""
        self.check_target(x, y, mask)
        with torch.no_grad():
            mse = masked_mse(self(x, self.output_steps), y, mask)
        return mse, {"mse": float(mse), "loss": float(mse)}


@register_model("persistence")
class Persistence(_Baseline):
    """The last observed frame, repeated for every lead time.

    Parameters
    ----------
    input_steps
        Frames the model is given (only the last is used); set it to the
        window length of the data it is compared on.
    output_steps
        Default number of steps.
    channels
        ``C``.
    """

    def __init__(self, *, input_steps: int = 1, output_steps: int = 10, channels: int = 1) -> None:
        super().__init__(input_steps=input_steps, output_steps=output_steps, channels=channels)
        self._remember_config(
            input_steps=self.input_steps, output_steps=self.output_steps, channels=self.channels
        )

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        steps = self.check_input(x, steps)
        return x[:, -1:].expand(-1, steps, -1, -1, -1).clone()


@register_model("optical_flow")
class OpticalFlow(_Baseline):
    """Lucas-Kanade motion plus semi-Lagrangian advection of the last frame (pysteps).

    The motion field is estimated with ``pysteps.motion.get_method("LK")`` on
    all ``input_steps`` frames (at least 2), separately for every sample and
    channel, and the last frame is advected along it with
    ``pysteps.extrapolation.get_method("semilagrangian")``.  Runs on the CPU
    with numpy whatever the input's device; the output comes back on it.

    For rain rates pysteps advises estimating motion on dB-transformed fields;
    geostp hands models normalised data, which serves the same purpose.

    Parameters
    ----------
    input_steps
        Frames used for the motion estimate (>= 2; pysteps' examples use 3).
    output_steps
        Default number of steps.
    channels
        ``C``.
    outside_value
        Value given to pixels advected in from outside the domain; None uses
        the minimum of the frame being advected (the "no echo" value of
        normalised radar data).
    """

    def __init__(
        self,
        *,
        input_steps: int = 3,
        output_steps: int = 10,
        channels: int = 1,
        outside_value: float | None = None,
    ) -> None:
        input_steps = check_int("input_steps", input_steps, minimum=1)
        if input_steps < 2:
            raise ConfigError(f"optical_flow needs input_steps >= 2 to estimate motion, got {input_steps}")
        super().__init__(input_steps=input_steps, output_steps=output_steps, channels=channels)
        self.outside_value = None if outside_value is None else check_float("outside_value", outside_value)
        self._remember_config(
            input_steps=self.input_steps,
            output_steps=self.output_steps,
            channels=self.channels,
            outside_value=self.outside_value,
        )
        try:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # pysteps prints where it found its config file
                from pysteps import extrapolation, motion
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ConfigError(
                "the optical_flow baseline needs pysteps; install geostp[radar]"
            ) from err
        self._motion = motion.get_method("LK")
        self._extrapolate = extrapolation.get_method("semilagrangian")

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        steps = self.check_input(x, steps)
        frames = x.detach().to("cpu", torch.float64).numpy()
        batch, _, channels, height, width = frames.shape
        out = np.empty((batch, steps, channels, height, width), dtype=np.float32)
        for b in range(batch):
            for ch in range(channels):
                out[b, :, ch] = self._nowcast(frames[b, :, ch], steps)
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    def _nowcast(self, sequence: np.ndarray, steps: int) -> np.ndarray:
        last = sequence[-1]
        outside = float(last.min()) if self.outside_value is None else self.outside_value
        with warnings.catch_warnings():
            # Featureless frames (no echo) make LK warn and return zero motion,
            # which is the right answer for them.
            warnings.simplefilter("ignore")
            velocity = self._motion(sequence, verbose=False)
            forecast = self._extrapolate(last, velocity, steps, outval=outside)
        # Extrapolation can leave NaN where the departure point is undefined.
        return np.nan_to_num(forecast, nan=outside)
