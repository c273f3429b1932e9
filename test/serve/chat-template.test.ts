// The default chat template and the Jinja subset, on templates written the way model folders ship them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { DEFAULT_TEMPLATE, compileJinja, jinjaChatTemplate, loadChatTemplate, TemplateError } from '../../src/serve/chat-template.ts';

const msgs = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Hi there' },
  { role: 'assistant', content: ' Hello.' },
  { role: 'user', content: 'Why?' },
];

test('default template: "<role>: <content>" lines, then "assistant:"', () => {
  assert.equal(DEFAULT_TEMPLATE.render(msgs), 'system: Be brief.\nuser: Hi there\nassistant:  Hello.\nuser: Why?\nassistant:');
  assert.equal(DEFAULT_TEMPLATE.render(msgs.slice(0, 2), { addGenerationPrompt: false }), 'system: Be brief.\nuser: Hi there\n');
  assert.deepEqual(DEFAULT_TEMPLATE.defaultStops, ['\nuser:']);
});

const CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

test('Jinja: a ChatML template', () => {
  const t = jinjaChatTemplate(CHATML, { bos: '<s>', eos: '</s>' });
  assert.equal(t.render(msgs.slice(0, 2)), '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n');
});

// Llama-2's template, as its tokenizer_config.json ships it (one line)
const LLAMA2 = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

test('Jinja: the Llama-2 template (slices, set, loop.index0, methods, raise_exception)', () => {
  const t = jinjaChatTemplate(LLAMA2, { bos: '<s>', eos: '</s>' });
  assert.equal(t.render(msgs), '<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello. </s><s>[INST] Why? [/INST]');
  assert.throws(() => t.render([{ role: 'assistant', content: 'x' }]), /roles must alternate/);
});

test('Jinja: trim_blocks and lstrip_blocks as transformers sets them (block tags only, not {{ }})', () => {
  const f = compileJinja("{% for m in messages %}\n    {% if m.role == 'user' %}\n  U:{{ m.content }}\n    {% endif %}\n{% endfor %}");
  // the newline after each block tag and the indentation before it go; "  U:" and the newline after }} stay
  assert.equal(f({ messages: msgs }), '  U:Hi there\n  U:Why?\n');
});

test('Jinja: whitespace control, filters, tests, namespace, conditional expressions', () => {
  const f = compileJinja(`{%- set ns = namespace(n=0) -%}
{%- for m in messages -%}
  {%- if m.role is defined and m.content | trim | length > 0 -%}{%- set ns.n = ns.n + 1 -%}{%- endif -%}
{%- endfor -%}
{{ ns.n }}|{{ 'yes' if flag else 'no' }}|{{ missing | default('d') }}|{{ (messages | length) ~ '!' }}|{{ 'a' in 'cat' }}|{{ x is none }}|{{ [1, 2] | tojson }}`);
  assert.equal(f({ messages: [{ role: 'u', content: '  ' }, { role: 'u', content: 'x' }, { role: 'u', content: 'y ' }], flag: true, x: null }), '2|yes|d|3!|True|True|[1,2]');
});

test('Jinja: unsupported syntax fails at compile time, with the place', () => {
  assert.throws(() => compileJinja('{% macro f() %}x{% endmacro %}'), (e) => e instanceof TemplateError && /unsupported statement "macro"/.test(e.message));
  assert.throws(() => compileJinja('{% if x %}no end'), /missing \{% endif %\}/);
  assert.throws(() => compileJinja('{{ x | frobnicate }}')({ x: 1 }), /unsupported filter/);
});

test('loadChatTemplate: a folder with chat_template uses it; a broken one falls back with a warning', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnl-tpl-'));
  try {
    assert.equal(loadChatTemplate(dir, { bos: '', eos: '' }).template.source, 'default');
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: CHATML }));
    assert.equal(loadChatTemplate(dir, { bos: '', eos: '' }).template.source, 'tokenizer_config.json');
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{% macro m() %}{% endmacro %}' }));
    const r = loadChatTemplate(dir, { bos: '', eos: '' });
    assert.equal(r.template.source, 'default');
    assert.match(r.warning!, /not supported/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
