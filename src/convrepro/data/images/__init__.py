"""ImageNet-layout photographs for AlexNet: the folder, its statistics, the paper's augmentation."""
