# method amn (AMN, CVPR 2022, as the seed method of a round; included by the Snakefile after
# rules/pseudo_mask.smk, which routes IRNet / the random walk to the AMN outputs):
#
#   cls[t] -> cam[t] -> ir_label[t] (first-stage seeds, make_ir_label)
#     -> train_amn[t] (AMN from those seeds; t > 0: CONTA context as the classifier's)
#     -> make_amn_cam[t, shard] -> eval_amn_cam[t] (round<t>/amn_cam_eval.csv)
#     -> make_amn_ir_label[t, shard] (amn.ir_fg_threshold / amn.ir_bg_threshold)
#     -> train_irn / random_walk (amn_cam ** amn.rw_power) / segmentation / confounder as usual.
#
# The rules exist only with method amn (an irn config need not have an `amn:` section);
# their --cfg builders (amn_*_json) are in rules/common.smk.

if AMN:

    rule train_amn:
        input:
            manifest=MANIFEST,
            ir_labels=lambda w: shard_dirs(w.t, "ir_label"),
            classifier=f"{R}/round{{t}}/cls/model.pth",
            xm=lambda w: xm_dirs(w.t),
            confounder=lambda w: confounder_input(w.t),
        output:
            model=f"{R}/round{{t}}/amn/model.pth",
            log_csv=f"{R}/round{{t}}/amn/train_log.csv",
        params:
            loader_workers=config["loader_workers"],
            py=PY,
            script=script("train_amn.py"),
            cfg=amn_train_json(),
            labels=lambda w, input: flags("--ir-label-dir", input.ir_labels),
            extra=lambda w, input: context_flags(input.xm, input.confounder),
            device=config["device"],
            seed=round_seed,
        log:
            f"{R}/logs/train_amn/round{{t}}.log",
        benchmark:
            f"{R}/benchmarks/train_amn/round{{t}}.tsv"
        threads: config["threads"]
        resources:
            gpu=GPU,
        conda:
            CONDA_ENV
        shell:
            "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train"
            " {params.labels} --classifier {input.classifier} --out {output.model} --log {output.log_csv}"
            " {params.extra} --device {params.device} --threads {threads} --seed {params.seed} --loader-workers {params.loader_workers} > {log} 2>&1"

    rule make_amn_cam:
        input:
            manifest=MANIFEST,
            model=f"{R}/round{{t}}/amn/model.pth",
            ir_labels=lambda w: shard_dirs(w.t, "ir_label"),
            xm=lambda w: xm_dirs(w.t),
        output:
            directory(f"{R}/round{{t}}/amn_cam/{{shard}}"),
        params:
            py=PY,
            script=script("make_amn_cam.py"),
            cfg=amn_infer_json(),
            labels=lambda w, input: flags("--ir-label-dir", input.ir_labels),
            xm=lambda w, input: flags("--xm-dir", input.xm),
            shards=len(SHARDS),
            device=config["device"],
            seed=round_seed,
        log:
            f"{R}/logs/make_amn_cam/round{{t}}_{{shard}}.log",
        benchmark:
            f"{R}/benchmarks/make_amn_cam/round{{t}}_{{shard}}.tsv"
        threads: config["threads"]
        resources:
            gpu=GPU,
        conda:
            CONDA_ENV
        shell:
            "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train"
            " --shard {wildcards.shard} --num-shards {params.shards} --model {input.model} {params.labels}"
            " --out-dir {output} {params.xm} --device {params.device} --threads {threads}"
            " --seed {params.seed} > {log} 2>&1"

    rule eval_amn_cam:
        input:
            manifest=MANIFEST,
            cams=lambda w: shard_dirs(w.t, "amn_cam"),
        output:
            f"{R}/round{{t}}/amn_cam_eval.csv",
        params:
            py=PY,
            script=script("eval_cam.py"),
            cfg=amn_eval_json(),
            cams=lambda w, input: flags("--cams-dir", input.cams),
        log:
            f"{R}/logs/eval_amn_cam/round{{t}}.log",
        benchmark:
            f"{R}/benchmarks/eval_amn_cam/round{{t}}.tsv"
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train_eval"
            " {params.cams} --out {output} > {log} 2>&1"

    rule make_amn_ir_label:
        input:
            manifest=MANIFEST,
            cams=lambda w: shard_dirs(w.t, "amn_cam"),
        output:
            directory(f"{R}/round{{t}}/amn_ir_label/{{shard}}"),
        params:
            py=PY,
            script=script("make_ir_label.py"),
            cfg=amn_ir_label_json(),
            cams=lambda w, input: flags("--cams-dir", input.cams),
            shards=len(SHARDS),
        log:
            f"{R}/logs/make_amn_ir_label/round{{t}}_{{shard}}.log",
        benchmark:
            f"{R}/benchmarks/make_amn_ir_label/round{{t}}_{{shard}}.tsv"
        threads: config["threads"]
        conda:
            CONDA_ENV
        shell:
            "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train"
            " --shard {wildcards.shard} --num-shards {params.shards} {params.cams} --out-dir {output}"
            " --threads {threads} > {log} 2>&1"
