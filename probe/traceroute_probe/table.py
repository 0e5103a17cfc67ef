"""An mtr-like table of a run, for a person at a terminal."""

from __future__ import annotations

from .result import RunResult, TargetResult, rtt_stats_ms

_HEADER = (
    f"{'TTL':>4}  {'Host':<40} {'Loss%':>6} {'Snt':>4} "
    f"{'Last':>7} {'Avg':>7} {'Best':>7} {'Wrst':>7} {'StDev':>7}"
)


def _ms(value: float) -> str:
    return f"{value:7.1f}"


def render_target(t: TargetResult) -> str:
    if t.address is None:
        title = f"{t.target}: not traced"
    else:
        shown = t.target if t.target == t.address else f"{t.target} ({t.address})"
        state = (
            f"reached in {t.hop_count} hop{'s' if t.hop_count != 1 else ''}"
            if t.reached
            else "destination not reached"
        )
        title = f"{shown} via {t.protocol}: {state}, {t.duration_seconds:.2f} s"
    lines = [title]
    if t.error is not None:
        lines.append(f"  error ({t.error.kind}): {t.error.message}")
    lines.extend(f"  warning: {w}" for w in t.warnings)
    if t.hops_min and t.hops_min != t.hop_count:
        lines.append(f"  flows reach the destination in {t.hops_min} to {t.hop_count} hops (ECMP)")
    if t.hops:
        lines.append(_HEADER)
    for hop in t.hops:
        addresses = hop.addresses
        rtts = hop.rtts_ms()
        loss = f"{hop.loss_ratio * 100:5.1f}%"
        host = addresses[0] if addresses else "*"
        if hop.rate_limited:
            host += " (rate-limited?)"
        row = f"{hop.ttl:>4}  {host:<40} {loss:>6} {hop.sent:>4}"
        stats = rtt_stats_ms(rtts)
        if stats is not None:
            best, avg, worst, stddev = stats
            last = next((f.rtts_ms[-1] for f in reversed(hop.flows) if f.rtts_ms), rtts[-1])
            row += f" {_ms(last)} {_ms(avg)} {_ms(best)} {_ms(worst)} {_ms(stddev)}"
        lines.append(row)
        lines.extend(f"{'':>4}  {other}" for other in addresses[1:])
    if t.reached:
        dest_loss = t.destination_loss_ratio * 100
        rtt = t.destination_rtt_ms
        lines.append(
            f"  destination loss {dest_loss:.1f}%"
            + (f", mean rtt {rtt:.1f} ms" if rtt is not None else "")
        )
    return "\n".join(lines)


def render(run: RunResult) -> str:
    return "\n\n".join(render_target(t) for t in run.targets)
