"""Training input: record sources (folders, RecordIO, TFRecord), mixing, sampling, augmentation."""

from kerasface.data.bad_record_report import BadRecordReport
from kerasface.data.bad_record_tracker import BadRecordTracker, diagnose_image_file
from kerasface.data.class_subset import ClassSubset, cut_long_tail
from kerasface.data.combined_source import CombinedSource, combine
from kerasface.data.dataset_weighted_sampler import DatasetWeightedSampler
from kerasface.data.face_aligner import FaceAligner
from kerasface.data.face_augmentation import AUGMENTATION_PRESETS, FaceAugmentation
from kerasface.data.face_detector import FaceDetection, FaceDetector
from kerasface.data.face_pipeline import FacePipeline
from kerasface.data.folder_source import IMAGE_EXTENSIONS, FolderSource
from kerasface.data.image_folder import ImageFolder, image_folder
from kerasface.data.label_map import load_label_map, save_label_map
from kerasface.data.label_noise import NoisyLabels, inject_label_noise
from kerasface.data.open_source import open_source
from kerasface.data.overlapping_split import OverlappingSplit, split_overlapping
from kerasface.data.pk_sampler import PKSampler
from kerasface.data.preprocessing import IMAGE_SIZE, normalize_images, normalize_numpy
from kerasface.data.record_io_source import RecordIOSource
from kerasface.data.record_io_writer import RecordIOWriter, write_insightface_record_io
from kerasface.data.record_source import RecordSource
from kerasface.data.sampler import Sampler, get_sampler
from kerasface.data.shuffle_sampler import ShuffleSampler
from kerasface.data.similarity_transform import ARCFACE_TEMPLATE, estimate_similarity
from kerasface.data.synthetic_faces import (
    SyntheticDataset,
    make_synthetic_dataset,
    synthetic_face,
    synthetic_identity,
    write_synthetic_faces,
    write_synthetic_pairs,
)
from kerasface.data.tfrecord_source import TFRecordSource, build_tfrecord_index
from kerasface.data.tfrecord_writer import write_tfrecords

__all__ = [
    "OverlappingSplit",
    "NoisyLabels",
    "inject_label_noise",
    "ARCFACE_TEMPLATE",
    "AUGMENTATION_PRESETS",
    "IMAGE_EXTENSIONS",
    "IMAGE_SIZE",
    "BadRecordReport",
    "BadRecordTracker",
    "ClassSubset",
    "CombinedSource",
    "DatasetWeightedSampler",
    "FaceAligner",
    "FaceAugmentation",
    "FaceDetection",
    "FaceDetector",
    "FacePipeline",
    "FolderSource",
    "ImageFolder",
    "PKSampler",
    "RecordIOSource",
    "RecordIOWriter",
    "RecordSource",
    "Sampler",
    "ShuffleSampler",
    "SyntheticDataset",
    "TFRecordSource",
    "build_tfrecord_index",
    "combine",
    "split_overlapping",
    "cut_long_tail",
    "diagnose_image_file",
    "estimate_similarity",
    "get_sampler",
    "image_folder",
    "load_label_map",
    "make_synthetic_dataset",
    "normalize_images",
    "normalize_numpy",
    "open_source",
    "save_label_map",
    "synthetic_face",
    "synthetic_identity",
    "write_insightface_record_io",
    "write_synthetic_faces",
    "write_synthetic_pairs",
    "write_tfrecords",
]
