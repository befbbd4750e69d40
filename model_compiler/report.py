"""What the compiler tried and why it kept or refused each candidate (for the CLI, logs and errors)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CandidateReport:
    name: str
    target: str
    quantization: str
    variant: str
    size_bytes: int
    compile_s: float
    metrics: dict[str, float]
    passed: bool
    reason: str  # why the gate refused it ("" when it passed)
    chosen: bool = False


@dataclass
class CompileReport:
    estimator: str  # e.g. "Pipeline(StandardScaler, MLPClassifier)"
    family: str  # "linear" | "mlp" | "trees"
    classifier: bool
    source_metrics: dict[str, float]
    candidates: list[CandidateReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not built and why (also in the manifest's lineage)
    choices: dict[str, str] = field(default_factory=dict)  # target -> what --quantize auto kept and why

    def table(self) -> str:
        """A fixed-width table of candidates, then the reasons for any refusals."""
        if self.classifier:
            head = f"{'artifact':<20} {'weights':<12} {'size':>10} {'accuracy':>9} {'delta':>7} {'agree':>7}  verdict"
        else:
            head = f"{'artifact':<20} {'weights':<12} {'size':>10} {'rmse':>10} {'+rmse%':>7} {'agree':>7}  verdict"
        lines = [f"{self.estimator} ({self.family})", head]
        for c in self.candidates:
            verdict = ("chosen" if c.chosen else "passed") if c.passed else "REFUSED"
            m = c.metrics
            agree = m.get("agreement", 0.0)
            if self.classifier:
                figures = f"{m.get('accuracy', 0.0):>9.4f} {m.get('accuracy_delta_pts', 0.0):>+7.2f} {agree:>7.4f}"
            else:
                figures = f"{m.get('rmse', 0.0):>10.4g} {m.get('rmse_increase_pct', 0.0):>+7.2f} {agree:>7.4f}"
            lines.append(f"{c.name:<20} {c.variant or 'fp32':<12} {c.size_bytes:>10,} {figures}  {verdict}")
        source = ", ".join(f"{k}={v:.4g}" for k, v in self.source_metrics.items() if k != "n_rows")
        lines.append(f"source estimator on {int(self.source_metrics.get('n_rows', 0))} held-out rows: {source}")
        lines.extend(f"  {c.name} ({c.variant or 'fp32'}) refused: {c.reason}" for c in self.candidates if not c.passed)
        lines.extend(f"note: {note}" for note in self.notes)
        lines.extend(f"{target}: {why}" for target, why in self.choices.items())
        return "\n".join(lines)
