"""On-device inference: one FaceEmbedder over kerasface exports, .keras models and third-party files."""

from kerasface.infer.face_embedder import FaceEmbedder, read_rgb_image
from kerasface.infer.search_result import SearchResult
from kerasface.infer.top_k_search import top_k_search

__all__ = ["FaceEmbedder", "SearchResult", "read_rgb_image", "top_k_search"]
