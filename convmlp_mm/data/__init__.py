"""The generated default dataset (see :mod:`convmlp_mm.data.shapes`)."""
from .shapes import CLASSES, PALETTE, SEG_CLASSES, generate, generate_classification

__all__ = ['CLASSES', 'SEG_CLASSES', 'PALETTE', 'generate', 'generate_classification']
