"""The EM steps of the pipeline, one module per step: pretrain (generated stand-in for
ImageNet), train_cls (CAM classifier + CONTA context), cam, ir_label (+ crf), irn (IRNet
boundary branch), random_walk, segment (DeepLab-v2), confounder (class-wise mean masks),
context (the CONTA attention of Eq. 3) and amn (the AMN seed method).
"""
