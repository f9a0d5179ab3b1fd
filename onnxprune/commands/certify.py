"""`onnxprune certify`: the largest pruning ratio whose risk is ≤ ε with probability ≥ 1-δ (Learn-then-Test)."""
from __future__ import annotations

import click

from ._common import (DEFAULT_GRID, delta_option, emit_json, json_option, loss_option, loss_tau_option,
                      pruning_options)


@click.command("certify")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calib", required=True, type=click.Path(),
              help="Labelled (or unlabelled) .npz, split (seeded) into a scoring half and a certification half.")
@click.option("--cert-data", type=click.Path(),
              help="Separate certification .npz sharing no sample with --calib; then all of --calib is used for "
                   "scoring.")
@click.option("--tolerance", required=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="ε: the largest acceptable risk (the mean of --loss: new errors, disagreement when unlabelled, "
                   "…).")
@delta_option
@loss_option
@loss_tau_option
@click.option("--grid", default=DEFAULT_GRID, show_default=True,
              help="Ratios tested (start:stop:step or r1,r2,...), fixed before data is seen.")
@click.option("--pvalue", type=click.Choice(["binomial", "hb", "wsr"]),
              help="binomial: exact, for 0/1 losses; hb: Hoeffding–Bentkus; wsr: betting (WSR), for losses in [0, 1]. "
                   "[default: binomial for 0/1 losses, hb for bounded ones]")
@click.option("--control", type=click.Choice(["fixed_sequence", "bonferroni"]), default="fixed_sequence",
              show_default=True, help="Family-wise error control: fixed-sequence testing in ascending ratio (stops "
                                      "at the first failure) or Bonferroni over the whole grid.")
@click.option("--cert-fraction", type=click.FloatRange(0.05, 0.95), default=0.5, show_default=True,
              help="Share of --calib held out (seeded) to certify on, when no --cert-data is given.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the certified model here (nothing certified: nothing written, exit 2).")
@click.option("--plot", type=click.Path(dir_okay=False), help="PNG of risk and p-value against ratio.")
@pruning_options
@json_option
def certify_cmd(model, calib, cert_data, tolerance, delta, loss, loss_tau, grid, pvalue, control, cert_fraction,
                output, plot, settings, as_json, ratio=None) -> None:
    """Certify the largest safe pruning ratio of MODEL with a finite-sample guarantee."""
    from .. import api
    from ..report import certification_rows, info, print_table

    run = api.certify(model, calib, tolerance=tolerance, delta=delta, grid=grid, settings=settings,
                      cert_data=cert_data, pvalue=pvalue, control=control, cert_fraction=cert_fraction,
                      output=output, loss=loss, loss_tau=loss_tau)
    d = run.to_dict()
    if plot:
        from ..report import certification_plot

        certification_plot(d, plot)
    if as_json:
        emit_json({**d, "settings": settings.to_dict()})
        return
    info(f"scored on {run.build_n} samples, certified on {run.cert_n} disjoint samples; loss = {run.loss} "
         f"(risk = {run.risk_meaning}; {run.certification.pvalue_method} p-values)")
    print_table(f"{settings.mode} / {settings.criterion}: risk ≤ {tolerance} with probability ≥ {1 - delta:.2f}",
                ["ratio", "risk", "p-value", "certified"],
                [[x["label"], x["risk"], x["p_value"], x["verdict"]] for x in certification_rows(d)])
    click.echo(run.nothing_certified() if not run.prunes else f"certified ratio: {d['certified_ratio']:.2f}"
               + (f"; wrote the certified model to {output}" if output else ""))
