from .dice import SegmentationScores, dice_iou_per_image, global_dice_iou

__all__ = ["SegmentationScores", "dice_iou_per_image", "global_dice_iou"]
