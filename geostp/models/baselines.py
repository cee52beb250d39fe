"""Reference forecasts behind the learned models' interface: persistence, extrapolation and S-PROG.

Neither has parameters (``trainable = False``).  Their :meth:`training_loss`
returns the masked MSE of their forecast as a tensor that does not require a
gradient, so an evaluation loop can score them like any model; a trainer must
check ``trainable`` before calling ``backward``.
"""

from __future__ import annotations

import numpy as np
import torch

from geostp.errors import ConfigError
from geostp.models.base import Forecaster, check_bool, check_float, check_int, register_model
from geostp.models.objectives import masked_mse

__all__ = ["Persistence", "OpticalFlow", "SProg"]


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


class _MotionBaseline(_Baseline):
    """Shared by the baselines that move rain along pysteps' motion (:mod:`geostp.advection`)."""

    def __init__(self, *, input_steps: int, output_steps: int, channels: int, rain: bool, motion: str) -> None:
        from geostp.advection import MOTION_METHODS, motion_method

        input_steps = check_int("input_steps", input_steps, minimum=1)
        if input_steps < 2:
            raise ConfigError(f"{self.name} needs input_steps >= 2 to estimate motion, got {input_steps}")
        motion = motion_method(motion)
        least = MOTION_METHODS[motion].min_frames
        if input_steps < least:
            raise ConfigError(f"{self.name} with motion={motion!r} needs input_steps >= {least} (the frames "
                              f"the method estimates motion from), got {input_steps}")
        super().__init__(input_steps=input_steps, output_steps=output_steps, channels=channels)
        self.rain = check_bool("rain", rain)
        self.motion = motion

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
        raise NotImplementedError


@register_model("optical_flow")
class OpticalFlow(_MotionBaseline):
    """Extrapolation nowcast: pysteps' standard recipe (:func:`geostp.advection.estimate_motion`).

    Lucas-Kanade motion (or another of pysteps' methods, ``motion=``) on the
    newest frames (three by default) in dBR with a threshold of 0.1 mm/h, then
    the newest frame carried along it by pysteps' semi-Lagrangian scheme.
    Pixels whose trajectory starts outside the domain take the newest frame's
    minimum (no echo), as pysteps' ``outval="min"``.
    Runs on the CPU with numpy whatever the input's device.

    Parameters
    ----------
    input_steps
        Frames used for the motion estimate (>= 2; the recipe uses the 3 newest).
    output_steps
        Default number of steps.
    channels
        ``C``.
    outside_value
        Value for pixels advected in from outside the domain; None: the newest frame's minimum.
    rain
        The input is rain rate in mm/h (motion on dBR); ``False``: motion on the values as given
        (e.g. data already in a transformed space).
    motion
        pysteps' motion method: ``"LK"`` (Lucas-Kanade, default), ``"VET"``, ``"DARTS"`` (needs
        ``input_steps >= 6``; uses up to 10) or ``"proesmans"`` (the two newest frames);
        :data:`geostp.advection.MOTION_METHODS`.
    """

    def __init__(
        self,
        *,
        input_steps: int = 3,
        output_steps: int = 10,
        channels: int = 1,
        outside_value: float | None = None,
        rain: bool = True,
        motion: str = "LK",
    ) -> None:
        super().__init__(input_steps=input_steps, output_steps=output_steps, channels=channels, rain=rain,
                         motion=motion)
        self.outside_value = None if outside_value is None else check_float("outside_value", outside_value)
        self._remember_config(
            input_steps=self.input_steps,
            output_steps=self.output_steps,
            channels=self.channels,
            outside_value=self.outside_value,
            rain=self.rain,
            motion=self.motion,
        )

    def _nowcast(self, sequence: np.ndarray, steps: int) -> np.ndarray:
        from geostp.advection import advect, displacements, estimate_motion

        last = sequence[-1]
        outside = float(np.nanmin(last)) if self.outside_value is None else self.outside_value
        velocity = estimate_motion(sequence, rain=self.rain, method=self.motion)
        forecast = advect(np.nan_to_num(last, nan=outside), displacements(velocity, steps), outside)
        return np.nan_to_num(forecast, nan=outside)


@register_model("sprog")
class SProg(_MotionBaseline):
    """S-PROG (Seed 2003) through pysteps: cascade decomposition, AR(2) per scale, CDF probability matching.

    An error-minimising nowcast: small scales lose predictability faster and
    are smoothed away with lead time, while the probability matching keeps the
    newest observation's distribution of rain rates.  The motion is the same
    as :class:`OpticalFlow`'s (:func:`geostp.advection.estimate_motion`), and
    the cascade runs on dBR (threshold 0.1 mm/h), as in pysteps' examples.

    Parameters
    ----------
    input_steps
        Frames read (>= 3: the AR(2) model needs three).
    output_steps
        Default number of steps.
    channels
        ``C``.
    cascade_levels
        Scales of the cascade (pysteps' examples on 1-km radar: 8).
    probability_matching
        ``"cdf"`` (default), ``"mean"`` or ``None``.
    rain
        The input is rain rate in mm/h; S-PROG is a rain method and refuses ``False``.
    motion
        pysteps' motion method, as for :class:`OpticalFlow` (default ``"LK"``).
    """

    def __init__(
        self,
        *,
        input_steps: int = 3,
        output_steps: int = 10,
        channels: int = 1,
        cascade_levels: int = 8,
        probability_matching: str | None = "cdf",
        rain: bool = True,
        motion: str = "LK",
    ) -> None:
        if check_int("input_steps", input_steps, minimum=1) < 3:
            raise ConfigError(f"sprog needs input_steps >= 3 (its AR(2) model reads three frames), got {input_steps}")
        super().__init__(input_steps=input_steps, output_steps=output_steps, channels=channels, rain=rain,
                         motion=motion)
        if not self.rain:
            raise ConfigError("sprog works on rain rates in mm/h (rain=True)")
        self.cascade_levels = check_int("cascade_levels", cascade_levels, minimum=1)
        if probability_matching not in ("cdf", "mean", None):
            raise ConfigError(f"probability_matching must be 'cdf', 'mean' or None, got {probability_matching!r}")
        self.probability_matching = probability_matching
        self._remember_config(
            input_steps=self.input_steps,
            output_steps=self.output_steps,
            channels=self.channels,
            cascade_levels=self.cascade_levels,
            probability_matching=self.probability_matching,
            rain=self.rain,
            motion=self.motion,
        )

    def _nowcast(self, sequence: np.ndarray, steps: int) -> np.ndarray:
        from geostp.advection import estimate_motion, sprog_nowcast

        velocity = estimate_motion(sequence, rain=True, method=self.motion)
        return sprog_nowcast(sequence, velocity, steps, levels=self.cascade_levels,
                             probability_matching=self.probability_matching)
