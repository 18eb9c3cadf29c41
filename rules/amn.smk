# method amn (AMN, CVPR 2022, as the seed method of a round; included by the Snakefile after
# rules/pseudo_mask.smk, which defines AMN and routes IRNet / the random walk):
#
#   cls[t] -> cam[t] -> ir_label[t] (first-stage seeds, make_ir_label)
#     -> train_amn[t] (AMN from those seeds; t > 0: CONTA context as the classifier's)
#     -> make_amn_cam[t, shard] -> eval_amn_cam[t] (round<t>/amn_cam_eval.csv)
#     -> make_amn_ir_label[t, shard] (amn.ir_fg_threshold / amn.ir_bg_threshold)
#     -> train_irn / random_walk (amn_cam ** amn.rw_power) / segmentation / confounder as usual.
#
# The rules exist only with method amn (an irn config need not have an `amn:` section).

AMN_POST_KEYS = ("eval_threshold", "ir_fg_threshold", "ir_bg_threshold", "rw_power", "inference_dropout")

if AMN:
    if "amn" not in config:
        raise WorkflowError("config key amn: required when method = amn")

    def amn_train_json():
        """--cfg of train_amn: the amn training/model keys and the context section."""
        amn = {k: v for k, v in config["amn"].items() if k not in AMN_POST_KEYS}
        return json.dumps({"amn": amn, "context": config["context"]}, sort_keys=True)

    def amn_infer_json():
        """--cfg of make_amn_cam: the cam section's scales and flip, amn.inference_dropout."""
        cfg = {"scales": config["cam"]["scales"], "flip": config["cam"]["flip"],
               "inference_dropout": config["amn"].get("inference_dropout", False)}
        return json.dumps(cfg, sort_keys=True)

    def amn_eval_json():
        """--cfg of eval_amn_cam: the cam sweep with amn.eval_threshold (same CSV layout)."""
        return json.dumps({**config["cam"], "eval_threshold": config["amn"]["eval_threshold"]}, sort_keys=True)

    def amn_ir_label_json():
        """--cfg of make_amn_ir_label: the ir_label section (CRF) with AMN's thresholds."""
        cfg = {**config["ir_label"], "fg_threshold": config["amn"]["ir_fg_threshold"],
               "bg_threshold": config["amn"]["ir_bg_threshold"]}
        return json.dumps(cfg, sort_keys=True)

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
            cfg=amn_train_json(),
            labels=lambda w, input: flags("--ir-label-dir", input.ir_labels),
            extra=lambda w, input: " ".join(
                [flags("--xm-dir", input.xm)] + [f"--confounder {c}" for c in input.confounder]
            ),
            seed=lambda w: config["seed"] + int(w.t),
        log:
            f"{R}/logs/train_amn/round{{t}}.log",
        benchmark:
            f"{R}/benchmarks/train_amn/round{{t}}.tsv"
        threads: config["threads"]
        resources:
            gpu=GPU,
        shell:
            "{PY} {SCRIPTS}/train_amn.py --cfg {params.cfg:q} --manifest {input.manifest} --split train"
            " {params.labels} --classifier {input.classifier} --out {output.model} --log {output.log_csv}"
            " {params.extra} --device {config[device]} --threads {threads} --seed {params.seed} > {log} 2>&1"

    rule make_amn_cam:
        input:
            manifest=MANIFEST,
            model=f"{R}/round{{t}}/amn/model.pth",
            ir_labels=lambda w: shard_dirs(w.t, "ir_label"),
            xm=lambda w: xm_dirs(w.t),
        output:
            directory(f"{R}/round{{t}}/amn_cam/{{shard}}"),
        params:
            cfg=amn_infer_json(),
            labels=lambda w, input: flags("--ir-label-dir", input.ir_labels),
            xm=lambda w, input: flags("--xm-dir", input.xm),
            shards=len(SHARDS),
            seed=lambda w: config["seed"] + int(w.t),
        log:
            f"{R}/logs/make_amn_cam/round{{t}}_{{shard}}.log",
        benchmark:
            f"{R}/benchmarks/make_amn_cam/round{{t}}_{{shard}}.tsv"
        threads: config["threads"]
        resources:
            gpu=GPU,
        shell:
            "{PY} {SCRIPTS}/make_amn_cam.py --cfg {params.cfg:q} --manifest {input.manifest} --split train"
            " --shard {wildcards.shard} --num-shards {params.shards} --model {input.model} {params.labels}"
            " --out-dir {output} {params.xm} --device {config[device]} --threads {threads}"
            " --seed {params.seed} > {log} 2>&1"

    rule eval_amn_cam:
        input:
            manifest=MANIFEST,
            cams=lambda w: shard_dirs(w.t, "amn_cam"),
        output:
            f"{R}/round{{t}}/amn_cam_eval.csv",
        params:
            cfg=amn_eval_json(),
            cams=lambda w, input: flags("--cams-dir", input.cams),
        log:
            f"{R}/logs/eval_amn_cam/round{{t}}.log",
        benchmark:
            f"{R}/benchmarks/eval_amn_cam/round{{t}}.tsv"
        threads: 1
        shell:
            "{PY} {SCRIPTS}/eval_cam.py --cfg {params.cfg:q} --manifest {input.manifest} --split train_eval"
            " {params.cams} --out {output} > {log} 2>&1"

    rule make_amn_ir_label:
        input:
            manifest=MANIFEST,
            cams=lambda w: shard_dirs(w.t, "amn_cam"),
        output:
            directory(f"{R}/round{{t}}/amn_ir_label/{{shard}}"),
        params:
            cfg=amn_ir_label_json(),
            cams=lambda w, input: flags("--cams-dir", input.cams),
            shards=len(SHARDS),
        log:
            f"{R}/logs/make_amn_ir_label/round{{t}}_{{shard}}.log",
        benchmark:
            f"{R}/benchmarks/make_amn_ir_label/round{{t}}_{{shard}}.tsv"
        threads: config["threads"]
        shell:
            "{PY} {SCRIPTS}/make_ir_label.py --cfg {params.cfg:q} --manifest {input.manifest} --split train"
            " --shard {wildcards.shard} --num-shards {params.shards} {params.cams} --out-dir {output}"
            " --threads {threads} > {log} 2>&1"
