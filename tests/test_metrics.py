"""Verification scores: against direct numpy computations and against the `scores` package."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geostp import metrics
from geostp.errors import ConfigError
from geostp.testing import as_backend


def fields(seed=0, nt=3, ny=20, nx=24, nan=True):
    rng = np.random.default_rng(seed)
    obs = rng.gamma(0.6, 3.0, (2, nt, ny, nx))
    fc = np.clip(obs + rng.normal(0, 1.5, obs.shape), 0, None)
    if nan:
        obs[:, :, :3, :4] = np.nan
        fc[0, 1, 10, 10] = np.nan
    lead = pd.to_timedelta([5, 10, 15][:nt], unit="min")
    dims = ("time", "lead_time", "y", "x")
    coords = {"lead_time": lead, "y": np.arange(ny), "x": np.arange(nx)}
    return xr.DataArray(fc, dims=dims, coords=coords), xr.DataArray(obs, dims=dims, coords=coords)


def test_continuous_scores_match_numpy(backend):
    f, o = (as_backend(a, backend) for a in fields())
    fv, ov = f.values, o.values
    valid = np.isfinite(fv) & np.isfinite(ov)
    for lt in range(3):
        v = valid[:, lt]
        err = fv[:, lt][v] - ov[:, lt][v]
        assert metrics.mse(f, o).values[lt] == pytest.approx(np.mean(err**2))
        assert metrics.mae(f, o).values[lt] == pytest.approx(np.mean(np.abs(err)))
        assert metrics.rmse(f, o).values[lt] == pytest.approx(np.sqrt(np.mean(err**2)))
        # per-frame sums, averaged over the frames (the benchmark's convention)
        d = np.where(valid[:, lt], fv[:, lt] - ov[:, lt], 0.0)
        assert metrics.mse_frame(f, o).values[lt] == pytest.approx(np.mean((d**2).sum(axis=(1, 2))))
        assert metrics.mae_frame(f, o).values[lt] == pytest.approx(np.mean(np.abs(d).sum(axis=(1, 2))))


def test_scores_package_agrees_on_mse():
    import scores
    import scores.categorical
    import scores.continuous
    import scores.spatial

    f, o = fields(nan=False)
    ours = metrics.mse(f, o)
    theirs = scores.continuous.mse(f, o, preserve_dims=["lead_time"])
    np.testing.assert_allclose(ours.values, theirs.values)


def test_contingency_scores_match_hand_count(backend):
    f, o = (as_backend(a, backend) for a in fields())
    fv, ov = f.values, o.values
    valid = np.isfinite(fv) & np.isfinite(ov)
    thr = 2.0
    for lt in range(3):
        v = valid[:, lt]
        fe, oe = fv[:, lt][v] >= thr, ov[:, lt][v] >= thr
        h, m, fa, c = (fe & oe).sum(), (~fe & oe).sum(), (fe & ~oe).sum(), (~fe & ~oe).sum()
        assert metrics.csi(f, o, thr).values[lt] == pytest.approx(h / (h + m + fa))
        assert metrics.pod(f, o, thr).values[lt] == pytest.approx(h / (h + m))
        assert metrics.far(f, o, thr).values[lt] == pytest.approx(fa / (h + fa))
        hss = 2 * (h * c - m * fa) / ((h + m) * (m + c) + (h + fa) * (fa + c))
        assert metrics.hss(f, o, thr).values[lt] == pytest.approx(hss)


def test_scores_package_agrees_on_csi():
    import scores
    import scores.categorical
    import scores.continuous
    import scores.spatial

    f, o = fields(nan=False)
    table = scores.categorical.BinaryContingencyManager(f >= 2.0, o >= 2.0).transform(
        preserve_dims=["lead_time"])
    np.testing.assert_allclose(metrics.csi(f, o, 2.0).values, table.critical_success_index().values)
    np.testing.assert_allclose(metrics.pod(f, o, 2.0).values, table.probability_of_detection().values)


def test_scores_package_agrees_on_fss():
    import scores
    import scores.categorical
    import scores.continuous
    import scores.spatial

    f, o = fields(nan=False)
    for scale in (1, 3, 7):
        ours = metrics.fss(f, o, 2.0, scale)
        theirs = scores.spatial.fss_2d(f, o, event_threshold=2.0, window_size=(scale, scale),
                                       spatial_dims=("y", "x"), preserve_dims=["lead_time"],
                                       threshold_operator=np.greater_equal)
        np.testing.assert_allclose(ours.values, theirs.values, rtol=1e-10)


def test_fss_perfect_and_masked():
    f, o = fields()
    assert np.allclose(metrics.fss(o, o, 1.0, 5).values, 1.0)
    assert np.all(np.isfinite(metrics.fss(f, o, 1.0, 5).values))


def test_ssim_matches_a_direct_window_loop():
    rng = np.random.default_rng(2)
    a = rng.random((12, 13))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    # direct: every 7x7 window wholly inside, sample (co)variances, scikit-image's constants
    vals = []
    for i in range(12 - 6):
        for j in range(13 - 6):
            x, y = a[i:i + 7, j:j + 7].ravel(), b[i:i + 7, j:j + 7].ravel()
            mx, my = x.mean(), y.mean()
            vx, vy = x.var(ddof=1), y.var(ddof=1)
            cxy = np.cov(x, y, ddof=1)[0, 1]
            c1, c2 = 0.01**2, 0.03**2
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    da_a = xr.DataArray(a[None], dims=("lead_time", "y", "x"))
    da_b = xr.DataArray(b[None], dims=("lead_time", "y", "x"))
    assert metrics.ssim(da_b, da_a).values[0] == pytest.approx(np.mean(vals), rel=1e-9)
    assert metrics.ssim(da_a, da_a).values[0] == pytest.approx(1.0)


def test_psnr():
    f, o = fields(nan=False)
    f, o = f / 20, o / 20
    expected = np.mean(10 * np.log10(1.0 / ((f - o) ** 2).mean(("y", "x")).values), axis=0)
    np.testing.assert_allclose(metrics.psnr(f, o).values, expected)


def test_verify_and_errors():
    f, o = fields()
    ds = metrics.verify(f, o, metrics=["mse", "csi", "fss"], thresholds=[1, 5], scales=[3])
    assert set(ds.data_vars) == {"mse", "csi_1", "csi_5", "fss_1_3", "fss_5_3"}
    assert ds["mse"].dims == ("lead_time",)
    with pytest.raises(ConfigError, match="unknown metric"):
        metrics.verify(f, o, metrics=["nope"])
    with pytest.raises(ConfigError, match="needs at least one threshold"):
        metrics.verify(f, o, metrics=["csi"])
    with pytest.raises(ConfigError, match="differ from observed"):
        metrics.mse(f, o.isel(x=slice(0, 5)))
    with pytest.raises(ConfigError, match="lacks dim"):
        metrics.mse(f.isel(lead_time=0), o.isel(lead_time=0))


def test_align_observations(radar_cube):
    from geostp.cube import forecast_to_dataarray

    obs = radar_cube["precipitation"]
    ref = obs.time.values[20]
    fc = forecast_to_dataarray(np.zeros((5, 1, 48, 40)), radar_cube, reference_time=ref,
                               variables=["precipitation"])
    aligned = metrics.align_observations(fc, obs)
    assert aligned.dims == fc.dims
    np.testing.assert_array_equal(aligned.isel(lead_time=0).values, obs.isel(time=21).values)
    assert np.isnan(aligned.isel(lead_time=4).values).all()  # beyond the end of the observations
