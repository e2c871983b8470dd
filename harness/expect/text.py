"""How the efficiency and energy figures read in the harness's own reports (the
terminal table, report.html, the campaign summary): one cell each, `/` where a
figure is missing, and the lines under the table that say what each was
divided by and where that came from, or why it is missing. The vendor pages'
table (harness/pages/) never shows these columns."""

from __future__ import annotations

from harness.core.results import RunResult

COLUMNS = ("MFU", "% exp", "J/1k")
EMPTY = "/"


def mfu_cell(result: RunResult) -> str:
    eff = result.efficiency
    return EMPTY if eff is None or eff.mfu is None else f"{eff.mfu:.1%}"


def expected_cell(result: RunResult) -> str:
    eff = result.efficiency
    return EMPTY if eff is None or eff.of_expected is None else f"{eff.of_expected:.0%}"


def energy_cell(result: RunResult) -> str:
    energy = result.energy
    return EMPTY if energy is None or energy.j_per_1k_samples is None else f"{energy.j_per_1k_samples:,.0f}"


def cells(result: RunResult) -> list[str]:
    """The MFU, % exp and J/1k cells, in COLUMNS order."""
    return [mfu_cell(result), expected_cell(result), energy_cell(result)]


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def mfu_line(result: RunResult) -> str | None:
    eff = result.efficiency
    if eff is None:
        return None
    if eff.mfu is None:
        return f"MFU /: {eff.mfu_missing or 'not judged'}"
    flops = eff.flops_per_sample or 0.0
    p_core = result.metrics.p_core if result.metrics is not None else None
    precision = eff.precision if eff.peak_key == eff.precision else f"{eff.precision} -> {eff.peak_key} peak"
    # A results.json from elsewhere (an older harness, a hand-made one) may lack the figures.
    peak = f"{eff.peak_tflops:g} TFLOPS" if eff.peak_tflops is not None else "? TFLOPS"
    return (f"MFU {eff.mfu:.1%} = {flops / 1e9:.3g} GFLOP/sample x p_core {_figure(p_core or 0.0)} / "
            f"({peak} dense {precision} x {eff.devices} device(s)); peak: {eff.peak_source or '?'}")


def expected_line(result: RunResult) -> str | None:
    eff = result.efficiency
    if eff is None:
        return None
    if eff.of_expected is None or eff.expected is None:
        return f"% exp /: {eff.expected_missing or 'not judged'}"
    measured = eff.of_expected * eff.expected
    unit = " GB/s" if eff.expected_metric == "peak_busbw_gbps" else ""
    return (f"% exp {eff.of_expected:.0%} = {eff.expected_metric} {_figure(measured)}{unit} / expected "
            f"{_figure(eff.expected)}{unit}; source: {eff.expected_source}")


def energy_line(result: RunResult) -> str | None:
    energy = result.energy
    if energy is None:
        return None
    if energy.missing:
        return f"J/1k /: {energy.missing}"
    if energy.energy_j is None:
        return None
    window = f" over {energy.window_s:.0f} s" if energy.window_s is not None else ""
    return f"energy {energy.energy_j:,.0f} J{window}" + (f" from {energy.source}" if energy.source else "")


def notes(result: RunResult) -> list[str]:
    """The lines under the table for one run: MFU, % of expected, energy."""
    return [line for line in (mfu_line(result), expected_line(result), energy_line(result)) if line]
