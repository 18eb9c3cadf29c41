"""Networks: ResNet backbone, CAM classifier (+context), IRN boundary branch, DeepLab-v2."""
