# Round summaries: results/<run>/round<t>/summary.csv holds rounds 0..t (a round's
# target); results/<run>/summary.csv holds all rounds 0..T (target `all`).


def round_evals(t):
    t = int(t)
    files = []
    for r in range(t + 1):
        files += [
            f"{rdir(r)}/cam_eval.csv",
            f"{rdir(r)}/pseudo_mask_eval.csv",
            f"{rdir(r)}/seg_eval_val.csv",
            f"{rdir(r)}/seg_eval_train.csv",
        ]
        if AMN:  # method amn: the AMN map sweep too (summary columns amn_cam_*)
            files.append(f"{rdir(r)}/amn_cam_eval.csv")
    return files


rule round_summary:
    input:
        lambda w: round_evals(w.t),
    output:
        f"{R}/round{{t}}/summary.csv",
    params:
        rounds=lambda w: " ".join(str(r) for r in range(int(w.t) + 1)),
    log:
        f"{R}/logs/summary/round{{t}}.log",
    threads: 1
    shell:
        "{PY} {SCRIPTS}/summary.py --run-dir {R} --rounds {params.rounds} --out {output} > {log} 2>&1"


rule summary:
    input:
        round_evals(T),
    output:
        f"{R}/summary.csv",
    params:
        rounds=" ".join(str(r) for r in range(T + 1)),
    log:
        f"{R}/logs/summary/all.log",
    threads: 1
    shell:
        "{PY} {SCRIPTS}/summary.py --run-dir {R} --rounds {params.rounds} --out {output} > {log} 2>&1"
