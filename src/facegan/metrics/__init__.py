"""Quality metrics: FID/KID/precision-recall (Inception), SWD and MS-SSIM (no download)."""
