-- LMArena's "hard prompt" criteria, judged by an LLM (issue 14): `moat judge-prompts` asks a registry
-- model which of the seven criteria each prompt meets and keeps its answer here. One judgement per
-- prompt; a new run with `--again` replaces it.
--
-- criteria: the criteria met, comma-separated in the fixed order of `moat_stats::hard_prompt`
-- (empty when none); judge: the registry model that answered; answer: its reply, cut to 2,000
-- characters, so a researcher can see why a prompt was or was not counted hard.
CREATE TABLE prompt_judgements (
    prompt_id BIGINT PRIMARY KEY REFERENCES prompts(id),
    judge TEXT NOT NULL,
    criteria TEXT NOT NULL,
    answer TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
