"""The suite imports the published reference model (tools/published_convmlp.py) by name."""
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))
