"""Our tools/train.py and tools/test.py take every flag of mmdet's, mmseg's and mmpretrain's own
(their installed ``.mim/tools``) with the same meaning; the errors of the flags."""
import argparse
import importlib
import importlib.util
import os.path as osp
from unittest import mock

import pytest
from mmengine.config import Config

from convmlp_mm import cli

HOSTS = ('mmdet', 'mmseg', 'mmpretrain')
OURS = {'train': (cli.train_parser, ['config.py']), 'test': (cli.test_parser, ['config.py', 'checkpoint.pth'])}


class Parsed(Exception):
    def __init__(self, parser):
        self.parser = parser


def host_parser(library: str, tool: str) -> argparse.ArgumentParser:
    """The parser that ``LIBRARY/.mim/tools/TOOL.py``'s ``parse_args()`` builds (its
    ``parse_args`` call is stopped before it reads sys.argv)."""
    path = osp.join(osp.dirname(importlib.import_module(library).__file__), '.mim', 'tools', f'{tool}.py')
    spec = importlib.util.spec_from_file_location(f'{library}_tools_{tool}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def stop(self, *args, **kwargs):
        raise Parsed(self)

    with mock.patch.object(argparse.ArgumentParser, 'parse_args', stop), pytest.raises(Parsed) as parsed:
        module.parse_args()
    return parsed.value.parser


def sample(action: argparse.Action) -> list:
    """A command-line use of ``action``'s first option string."""
    flag = action.option_strings[0]
    if action.nargs == 0:
        return [flag]
    if action.choices:
        return [flag, str(list(action.choices)[-1])]
    if action.nargs in ('+', '*') or isinstance(action.nargs, int):
        return [flag, 'model.a=1'] if 'options' in flag else [flag, '1']
    return [flag, '3' if action.type in (int, float) else 'value']


@pytest.mark.stack_independent('the host libraries are the same versions on both stacks')
@pytest.mark.parametrize('tool', list(OURS))
@pytest.mark.parametrize('library', HOSTS)
def test_every_host_flag_is_ours_with_the_same_meaning(library, tool):
    make, positional = OURS[tool]
    ours = make(tool)
    host = host_parser(library, tool)
    host_flags = [a for a in host._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert host_flags
    missing = [a.option_strings for a in host_flags if not all(f in ours._option_string_actions
                                                               for f in a.option_strings)]
    assert not missing, f'{library} tools/{tool}.py flags that ours lacks: {missing}'
    for action in host_flags:
        words = sample(action)
        theirs, mine = host.parse_args([*positional, *words]), ours.parse_args([*positional, *words])
        ours_action = ours._option_string_actions[action.option_strings[0]]
        value, our_value = getattr(theirs, action.dest), getattr(mine, ours_action.dest)
        if action.dest == 'resume' and value is True:
            assert our_value == 'auto'  # mmseg's bare --resume: the latest checkpoint of the work dir
        else:
            assert our_value == value, (library, tool, words, value, our_value)
        if action.choices:
            assert set(action.choices) <= set(ours_action.choices), (action.option_strings, ours_action.choices)
    defaults = {a.dest: a.default for a in host_flags if a.dest != 'resume'}
    mine = vars(ours.parse_args(positional))
    assert {dest: mine[dest] for dest in defaults if dest in mine} == \
        {dest: default for dest, default in defaults.items() if dest in mine}


def test_auto_scale_lr_without_the_config_entry_is_one_clear_error():
    cfg = Config(dict(optim_wrapper=dict(optimizer=dict(lr=0.1))))
    with pytest.raises(ValueError, match=r'--auto-scale-lr: a.py has no auto_scale_lr=dict\(base_batch_size=...\)'):
        cli.enable_auto_scale_lr(cfg, 'a.py')
    cfg.auto_scale_lr = dict(base_batch_size=16)
    cli.enable_auto_scale_lr(cfg, 'a.py')
    assert cfg.auto_scale_lr == dict(base_batch_size=16, enable=True)


@pytest.mark.parametrize('checkpoint', ['https://download.openmmlab.com/x.pth', 'open-mmlab://resnet50_v1c',
                                        'torchvision://resnet50'])
def test_checkpoint_urls_are_taken_and_a_missing_file_is_a_usage_error(checkpoint, tmp_path, capsys):
    parser = cli.test_parser('test')
    assert cli.checkpoint_argument(parser, checkpoint) == checkpoint
    with pytest.raises(SystemExit):
        cli.checkpoint_argument(parser, str(tmp_path / 'epoch_1.pth'))
    assert f"checkpoint '{tmp_path}/epoch_1.pth' does not exist: expected a checkpoint file or a URL" in \
        capsys.readouterr().err
