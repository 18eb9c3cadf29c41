# method seam (SEAM, CVPR 2020, with AffinityNet; conta_core/steps/seam.py), included by
# rules/run.smk after rules/pseudo_mask.smk. SEAM replaces the CAM classifier, the IR labels and
# IRNet + its walk of a round: the step rules train_cls, make_cam, make_ir_label and
# random_walk call SEAM's step functions (conta_core.infra.methods, Method.steps) and write the
# same paths as with irn; every other rule (eval_cam, the confounding measures, the context
# diagnostics, DeepLab-v2, the confounder) is the same as with irn:
#
#   train_cls[t] (train_seam) -> round<t>/cls/model.pth (a "seam" checkpoint; t > 0: CONTA
#     context at block 5)
#     -> make_cam[t, shard] (make_seam_cams) -> round<t>/cam/ (standard CAM files, eval_cam as usual)
#     -> make_ir_label[t, shard] (make_seam_crf_labels) -> round<t>/ir_label/ (<id>.npz la/ha
#        scores + <id>.png)
#     -> train_aff[t] (this file) -> round<t>/aff/model.pth
#     -> random_walk[t, shard] (make_seam_pseudo_masks) -> round<t>/pseudo_mask/
#     -> segmentation / confounder as usual.
#
# train_aff exists only with method seam (an irn config need not have a `seam:` section); the
# --cfg objects of the seam rules (RULE_JSON) come from conta_core.infra.rule_configs.seam_rule_configs.

if SEAM:

    rule train_aff:
        input:
            pretrained=pretrain_input("seam.aff"),
            manifest=MANIFEST,
            label_dir=ir_labels_of,
            seam=L.model("{t}", "cls"),
        output:
            out=L.model("{t}", "aff"),
            train_log=L.train_log("{t}", "aff"),
        log:
            L.log("train_aff", "round{t}"),
        benchmark:
            L.benchmark("train_aff", "round{t}")
        conda:
            CONDA_ENV
        threads: config["threads"]
        resources:
            gpu=GPU,
        params:
            cfg=RULE_JSON["train_aff"],
            split="train",
            device=config["device"],
            seed=round_seed,
            loader_workers=config["loader_workers"],
        script:
            "../workflow_scripts/train_aff.py"
