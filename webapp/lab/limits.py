"""The library's caps on model and dataset files, as this installation's settings set them: one place, used
by the upload services, the pages that read stored files and the workers."""

from django.conf import settings

from defenses.data import DatasetLimits
from defenses.modelcheck import Limits


def model_limits() -> Limits:
    return Limits(
        max_file_bytes=settings.MAX_UPLOAD_BYTES,
        max_params=settings.MAX_MODEL_PARAMS,
        max_dataset_elements=settings.MAX_MODEL_PARAMS,
    )


def dataset_limits() -> DatasetLimits:
    return DatasetLimits(
        max_images=settings.MAX_DATASET_IMAGES,
        max_image_pixels=settings.MAX_DATASET_IMAGE_PIXELS,
        max_bytes=settings.MAX_DATASET_BYTES,
    )
