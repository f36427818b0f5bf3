//! Token-classification post-processing: scores, words, entity groups. A port of transformers
//! 4.51.3 `TokenClassificationPipeline.gather_pre_entities`, `aggregate`, `aggregate_words`,
//! `aggregate_word`, `group_entities`, `group_sub_entities` and
//! `aggregate_overlapping_entities`
//! (<https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/pipelines/token_classification.py>),
//! over plain token views and logits so that it is tested without a model.

use serde::Serialize;

use super::{AggregationStrategy, Params, TokenView, TokenizerFacts};
use crate::pipelines::answer::CharIndex;

/// Softmax of each row, shifted by the row maximum (numpy, f32).
pub fn softmax_rows(logits: &[Vec<f32>]) -> Vec<Vec<f32>> {
    logits
        .iter()
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.into_iter().map(|e| e / sum).collect()
        })
        .collect()
}

/// A token with its label scores, before aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct PreEntity {
    /// The token (or the sentence span for the unknown token).
    pub word: String,
    /// Softmax scores over the labels.
    pub scores: Vec<f32>,
    /// Start character.
    pub start: usize,
    /// End character.
    pub end: usize,
    /// Index of the token in its encoding.
    pub index: usize,
    /// Continues the previous token's word.
    pub is_subword: bool,
}

/// transformers' `gather_pre_entities`: special tokens dropped, subword flags set.
pub fn gather_pre_entities(
    sentence: &str,
    tokens: &[TokenView],
    scores: &[Vec<f32>],
    facts: TokenizerFacts,
) -> Vec<PreEntity> {
    let chars = CharIndex::new(sentence);
    tokens
        .iter()
        .zip(scores)
        .enumerate()
        .filter(|(_, (token, _))| !token.special)
        .map(|(index, (token, scores))| {
            let word_ref = chars.slice(token.start, token.end);
            let mut word = token.token.clone();
            let mut is_subword = if facts.word_aware {
                word.chars().count() != word_ref.chars().count()
            } else {
                // Fallback heuristic: a token not preceded by a space, nor being one, continues a word.
                token.start > 0 && !chars.slice(token.start - 1, token.start + 1).contains(' ')
            };
            if Some(token.id) == facts.unk_id {
                word = word_ref.to_owned();
                is_subword = false;
            }
            PreEntity {
                word,
                scores: scores.clone(),
                start: token.start,
                end: token.end,
                index,
                is_subword,
            }
        })
        .collect()
}

/// One answer item: a token (strategy `none`) or a group of tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Entity {
    /// `{"entity","score","index","word","start","end"}`.
    Token {
        /// The label, e.g. `B-PER`.
        entity: String,
        /// Its probability.
        score: f32,
        /// Token index in the encoding.
        index: usize,
        /// The token.
        word: String,
        /// Start character.
        start: usize,
        /// End character.
        end: usize,
    },
    /// `{"entity_group","score","word","start","end"}`.
    Group {
        /// The tag without its B-/I- prefix, e.g. `PER`.
        entity_group: String,
        /// Mean score of the grouped items.
        score: f32,
        /// The decoded tokens of the group.
        word: String,
        /// Start character.
        start: usize,
        /// End character.
        end: usize,
    },
}

impl Entity {
    fn label(&self) -> &str {
        match self {
            Self::Token { entity, .. } => entity,
            Self::Group { entity_group, .. } => entity_group,
        }
    }

    fn span(&self) -> (usize, usize, f32) {
        match self {
            Self::Token {
                start, end, score, ..
            }
            | Self::Group {
                start, end, score, ..
            } => (*start, *end, *score),
        }
    }
}

/// An item between word aggregation and grouping.
#[derive(Debug, Clone)]
struct Labelled {
    entity: String,
    score: f32,
    word: String,
    start: usize,
    end: usize,
}

/// Labels and the decoder's join of tokens into text.
pub struct Labels<'a> {
    /// `id2label`.
    pub id2label: &'a [String],
    /// `convert_tokens_to_string`.
    pub join: &'a dyn Fn(&[String]) -> String,
}

impl Labels<'_> {
    fn name(&self, idx: usize) -> String {
        self.id2label
            .get(idx)
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{idx}"))
    }
}

/// Index of the first maximum (numpy `argmax`).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// transformers' `aggregate`: label each token or word, then group unless the strategy is `none`.
pub fn aggregate(
    pre: &[PreEntity],
    strategy: AggregationStrategy,
    labels: &Labels<'_>,
) -> Vec<Entity> {
    match strategy {
        AggregationStrategy::None => pre
            .iter()
            .map(|p| {
                let idx = argmax(&p.scores);
                Entity::Token {
                    entity: labels.name(idx),
                    score: p.scores[idx],
                    index: p.index,
                    word: p.word.clone(),
                    start: p.start,
                    end: p.end,
                }
            })
            .collect(),
        AggregationStrategy::Simple => {
            let items = pre
                .iter()
                .map(|p| {
                    let idx = argmax(&p.scores);
                    Labelled {
                        entity: labels.name(idx),
                        score: p.scores[idx],
                        word: p.word.clone(),
                        start: p.start,
                        end: p.end,
                    }
                })
                .collect::<Vec<_>>();
            group_entities(&items, labels)
        }
        _ => group_entities(&aggregate_words(pre, strategy, labels), labels),
    }
}

/// transformers' `aggregate_words`: a word is a token followed by its subwords.
fn aggregate_words(
    pre: &[PreEntity],
    strategy: AggregationStrategy,
    labels: &Labels<'_>,
) -> Vec<Labelled> {
    let mut words = Vec::new();
    let mut group: Vec<&PreEntity> = Vec::new();
    for p in pre {
        if !group.is_empty() && !p.is_subword {
            words.push(aggregate_word(&group, strategy, labels));
            group.clear();
        }
        group.push(p);
    }
    if !group.is_empty() {
        words.push(aggregate_word(&group, strategy, labels));
    }
    words
}

/// transformers' `aggregate_word` for `first`, `max` and `average`.
fn aggregate_word(
    group: &[&PreEntity],
    strategy: AggregationStrategy,
    labels: &Labels<'_>,
) -> Labelled {
    let word = (labels.join)(&group.iter().map(|p| p.word.clone()).collect::<Vec<_>>());
    let (idx, score) = match strategy {
        AggregationStrategy::Max => {
            // `max(entities, key=scores.max())`: the first token with the highest top score.
            let mut best = group[0];
            for p in &group[1..] {
                if p.scores[argmax(&p.scores)] > best.scores[argmax(&best.scores)] {
                    best = p;
                }
            }
            let idx = argmax(&best.scores);
            (idx, best.scores[idx])
        }
        AggregationStrategy::Average => {
            let n = group[0].scores.len();
            let average: Vec<f32> = (0..n)
                .map(|k| {
                    let finite: Vec<f32> = group
                        .iter()
                        .map(|p| p.scores[k])
                        .filter(|s| !s.is_nan())
                        .collect();
                    finite.iter().sum::<f32>() / finite.len() as f32
                })
                .collect();
            let idx = argmax(&average);
            (idx, average[idx])
        }
        // `first` (none and simple never reach here).
        _ => {
            let idx = argmax(&group[0].scores);
            (idx, group[0].scores[idx])
        }
    };
    Labelled {
        entity: labels.name(idx),
        score,
        word,
        start: group[0].start,
        end: group[group.len() - 1].end,
    }
}

/// `get_tag`: (`B` or `I`, tag); a label without a B-/I- prefix counts as `I`.
fn get_tag(name: &str) -> (char, &str) {
    if let Some(tag) = name.strip_prefix("B-") {
        ('B', tag)
    } else if let Some(tag) = name.strip_prefix("I-") {
        ('I', tag)
    } else {
        ('I', name)
    }
}

/// transformers' `group_entities`: adjacent items with the same tag join unless the newer is B-.
fn group_entities(items: &[Labelled], labels: &Labels<'_>) -> Vec<Entity> {
    let mut groups = Vec::new();
    let mut current: Vec<&Labelled> = Vec::new();
    for item in items {
        if let Some(last) = current.last() {
            let (bi, tag) = get_tag(&item.entity);
            let (_, last_tag) = get_tag(&last.entity);
            if !(tag == last_tag && bi != 'B') {
                groups.push(group_sub_entities(&current, labels));
                current.clear();
            }
        }
        current.push(item);
    }
    if !current.is_empty() {
        groups.push(group_sub_entities(&current, labels));
    }
    groups
}

/// transformers' `group_sub_entities`.
fn group_sub_entities(items: &[&Labelled], labels: &Labels<'_>) -> Entity {
    let first = &items[0].entity;
    let entity_group = first
        .split_once('-')
        .map_or(first.as_str(), |(_, tag)| tag)
        .to_owned();
    let finite: Vec<f32> = items
        .iter()
        .map(|i| i.score)
        .filter(|s| !s.is_nan())
        .collect();
    Entity::Group {
        entity_group,
        score: finite.iter().sum::<f32>() / finite.len() as f32,
        word: (labels.join)(&items.iter().map(|i| i.word.clone()).collect::<Vec<_>>()),
        start: items[0].start,
        end: items[items.len() - 1].end,
    }
}

/// transformers' `aggregate_overlapping_entities`, for the windows of a long text (`stride`):
/// of overlapping entities the longer wins, then the higher score.
pub fn aggregate_overlapping_entities(mut entities: Vec<Entity>) -> Vec<Entity> {
    if entities.is_empty() {
        return entities;
    }
    entities.sort_by_key(|e| e.span().0);
    let mut out = Vec::new();
    let mut iter = entities.into_iter();
    let mut previous = iter.next().expect("checked non-empty above");
    for entity in iter {
        let (p_start, p_end, p_score) = previous.span();
        let (start, end, score) = entity.span();
        if p_start <= start && start < p_end {
            let (len, p_len) = (end - start, p_end - p_start);
            if len > p_len || (len == p_len && score > p_score) {
                previous = entity;
            }
        } else {
            out.push(std::mem::replace(&mut previous, entity));
        }
    }
    out.push(previous);
    out
}

/// One window of a sentence with the model's logits for each of its tokens.
pub struct Chunk {
    /// The window's tokens.
    pub tokens: Vec<TokenView>,
    /// Logits, one row per token (padding rows may be absent).
    pub logits: Vec<Vec<f32>>,
}

/// transformers' `postprocess`: entities of every window, filtered by `ignore_labels`, then
/// de-overlapped when there are several windows.
pub fn postprocess(
    sentence: &str,
    chunks: &[Chunk],
    params: &Params,
    facts: TokenizerFacts,
    labels: &Labels<'_>,
) -> Vec<Entity> {
    let ignore = params.ignore_labels();
    let mut all = Vec::new();
    for chunk in chunks {
        let scores = softmax_rows(&chunk.logits);
        let pre = gather_pre_entities(sentence, &chunk.tokens, &scores, facts);
        all.extend(
            aggregate(&pre, params.aggregation_strategy, labels)
                .into_iter()
                .filter(|e| !ignore.iter().any(|l| l == e.label())),
        );
    }
    if chunks.len() > 1 {
        aggregate_overlapping_entities(all)
    } else {
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::encode::{encode_single, plain, tests::fixture_tokenizer};
    use crate::pipelines::token_classification::{
        AggregationStrategy, Params, TokenView, TokenizerFacts, token_views, tokens_to_string,
    };

    fn labels() -> Vec<String> {
        ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
            .map(String::from)
            .to_vec()
    }

    /// The WordPiece decoder's join (`##` glued, spaces otherwise), as the fixtures use.
    fn wordpiece_join(tokens: &[String]) -> String {
        let mut out = String::new();
        for (i, t) in tokens.iter().enumerate() {
            match t.strip_prefix("##") {
                Some(rest) if i > 0 => out.push_str(rest),
                _ if i > 0 => {
                    out.push(' ');
                    out.push_str(t);
                }
                _ => out.push_str(t),
            }
        }
        out
    }

    fn view(id: u32, token: &str, start: usize, end: usize) -> TokenView {
        TokenView {
            id,
            token: token.into(),
            start,
            end,
            special: false,
        }
    }

    fn special(id: u32, token: &str) -> TokenView {
        TokenView {
            id,
            token: token.into(),
            start: 0,
            end: 0,
            special: true,
        }
    }

    /// One-hot-ish score rows: `label` gets `p`, the rest share 1 - p.
    fn row(label: usize, p: f32) -> Vec<f32> {
        let rest = (1.0 - p) / 6.0;
        (0..7).map(|i| if i == label { p } else { rest }).collect()
    }

    // "Microsoft Corp in Paris" as micro ##soft corp in paris
    fn sample() -> (&'static str, Vec<TokenView>) {
        let sentence = "Microsoft Corp in Paris";
        let tokens = vec![
            special(2, "[CLS]"),
            view(10, "micro", 0, 5),
            view(11, "##soft", 5, 9),
            view(12, "corp", 10, 14),
            view(13, "in", 15, 17),
            view(14, "paris", 18, 23),
            special(3, "[SEP]"),
        ];
        (sentence, tokens)
    }

    fn sample_scores() -> Vec<Vec<f32>> {
        vec![
            row(0, 0.9),
            row(5, 0.6), // micro: B-ORG
            row(1, 0.7), // ##soft: B-PER (disagrees inside the word)
            row(6, 0.5), // corp: I-ORG
            row(0, 0.9), // in: O
            row(3, 0.8), // paris: B-LOC
            row(0, 0.9),
        ]
    }

    const FACTS: TokenizerFacts = TokenizerFacts {
        word_aware: true,
        unk_id: Some(1),
    };

    fn run(strategy: AggregationStrategy) -> Vec<Entity> {
        let (sentence, tokens) = sample();
        let pre = gather_pre_entities(sentence, &tokens, &sample_scores(), FACTS);
        let id2label = labels();
        let join = wordpiece_join;
        aggregate(
            &pre,
            strategy,
            &Labels {
                id2label: &id2label,
                join: &join,
            },
        )
    }

    fn group(tag: &str, score: f32, word: &str, start: usize, end: usize) -> Entity {
        Entity::Group {
            entity_group: tag.into(),
            score,
            word: word.into(),
            start,
            end,
        }
    }

    fn assert_entities(actual: &[Entity], expected: &[Entity]) {
        assert_eq!(actual.len(), expected.len(), "{actual:#?}");
        for (a, e) in actual.iter().zip(expected) {
            match (a, e) {
                (
                    Entity::Group {
                        entity_group: ag,
                        score: asc,
                        word: aw,
                        start: a0,
                        end: a1,
                    },
                    Entity::Group {
                        entity_group: eg,
                        score: esc,
                        word: ew,
                        start: e0,
                        end: e1,
                    },
                ) => {
                    assert_eq!((ag, aw, a0, a1), (eg, ew, e0, e1));
                    assert!((asc - esc).abs() < 1e-6, "{asc} vs {esc}");
                }
                _ => assert_eq!(a, e),
            }
        }
    }

    #[test]
    fn none_keeps_every_token_with_its_index() {
        let out = run(AggregationStrategy::None);
        assert_eq!(out.len(), 5);
        assert_eq!(
            out[1],
            Entity::Token {
                entity: "B-PER".into(),
                score: 0.7,
                index: 2,
                word: "##soft".into(),
                start: 5,
                end: 9
            }
        );
    }

    #[test]
    fn simple_groups_by_tag_and_splits_on_b() {
        let out = run(AggregationStrategy::Simple);
        assert_entities(
            &out,
            &[
                group("ORG", 0.6, "micro", 0, 5),
                group("PER", 0.7, "##soft", 5, 9),
                group("ORG", 0.5, "corp", 10, 14),
                group("O", 0.9, "in", 15, 17),
                group("LOC", 0.8, "paris", 18, 23),
            ],
        );
    }

    #[test]
    fn first_uses_the_first_token_of_each_word() {
        let out = run(AggregationStrategy::First);
        assert_entities(
            &out,
            &[
                // microsoft (B-ORG 0.6) + corp (I-ORG 0.5) group into one ORG entity.
                group("ORG", 0.55, "microsoft corp", 0, 14),
                group("O", 0.9, "in", 15, 17),
                group("LOC", 0.8, "paris", 18, 23),
            ],
        );
    }

    #[test]
    fn max_uses_the_most_confident_token_of_each_word() {
        let out = run(AggregationStrategy::Max);
        assert_entities(
            &out,
            &[
                group("PER", 0.7, "microsoft", 0, 9),
                group("ORG", 0.5, "corp", 10, 14),
                group("O", 0.9, "in", 15, 17),
                group("LOC", 0.8, "paris", 18, 23),
            ],
        );
    }

    #[test]
    fn average_averages_scores_over_the_word_then_picks() {
        let out = run(AggregationStrategy::Average);
        // microsoft: B-ORG (0.6 + 0.05)/2 = 0.325 vs B-PER (0.0667 + 0.7)/2 = 0.383 -> B-PER.
        let per = (0.4f32 / 6.0 + 0.7) / 2.0;
        assert_entities(
            &out,
            &[
                group("PER", per, "microsoft", 0, 9),
                group("ORG", 0.5, "corp", 10, 14),
                group("O", 0.9, "in", 15, 17),
                group("LOC", 0.8, "paris", 18, 23),
            ],
        );
    }

    #[test]
    fn ignore_labels_filters_tokens_and_groups() {
        let (sentence, tokens) = sample();
        let id2label = labels();
        let join = wordpiece_join;
        let chunk = Chunk {
            tokens,
            logits: sample_scores()
                .iter()
                .map(|r| r.iter().map(|p| p.ln()).collect())
                .collect(),
        };
        let params = Params {
            aggregation_strategy: AggregationStrategy::Simple,
            ..Params::default()
        };
        let out = postprocess(
            sentence,
            std::slice::from_ref(&chunk),
            &params,
            FACTS,
            &Labels {
                id2label: &id2label,
                join: &join,
            },
        );
        assert_eq!(
            out.iter().map(|e| e.label()).collect::<Vec<_>>(),
            ["ORG", "PER", "ORG", "LOC"]
        );
        let params = Params {
            ignore_labels: Some(vec!["B-PER".into(), "LOC".into()]),
            ..Params::default()
        };
        let out = postprocess(
            sentence,
            &[chunk],
            &params,
            FACTS,
            &Labels {
                id2label: &id2label,
                join: &join,
            },
        );
        assert_eq!(
            out.iter().map(|e| e.label()).collect::<Vec<_>>(),
            ["B-ORG", "I-ORG", "O", "B-LOC"]
        );
    }

    #[test]
    fn unknown_token_takes_the_sentence_text_and_starts_a_word() {
        let sentence = "a 東京";
        let tokens = vec![view(20, "a", 0, 1), view(1, "[UNK]", 2, 4)];
        let scores = vec![row(1, 0.5), row(2, 0.5)];
        let pre = gather_pre_entities(sentence, &tokens, &scores, FACTS);
        assert_eq!(pre[1].word, "東京");
        assert!(!pre[1].is_subword);
    }

    #[test]
    fn fallback_heuristic_without_a_subword_prefix() {
        // Byte-level BPE style: no continuing prefix, so words are told apart by spaces.
        let facts = TokenizerFacts {
            word_aware: false,
            unk_id: None,
        };
        let sentence = "Hello, worldwide";
        let tokens = vec![
            view(1, "Hello", 0, 5),
            view(2, ",", 5, 6),
            view(3, "Ġworld", 7, 12),
            view(4, "wide", 12, 16),
        ];
        let scores = vec![row(0, 0.5); 4];
        let pre = gather_pre_entities(sentence, &tokens, &scores, facts);
        assert_eq!(
            pre.iter().map(|p| p.is_subword).collect::<Vec<_>>(),
            [false, true, false, true]
        );
    }

    #[test]
    fn overlapping_windows_keep_the_longer_then_the_more_confident() {
        let out = aggregate_overlapping_entities(vec![
            group("PER", 0.5, "a", 0, 4),
            group("PER", 0.9, "b", 10, 12),
            group("PER", 0.6, "a b", 0, 8),
            group("PER", 0.8, "b", 10, 12),
            group("LOC", 0.7, "c", 20, 22),
        ]);
        assert_entities(
            &out,
            &[
                group("PER", 0.6, "a b", 0, 8),
                group("PER", 0.9, "b", 10, 12),
                group("LOC", 0.7, "c", 20, 22),
            ],
        );
    }

    #[test]
    fn real_tokenizer_words_and_offsets() {
        let tok = plain(&fixture_tokenizer("bert-tokcls"));
        let facts = TokenizerFacts::of(&tok, None);
        assert!(facts.word_aware);
        assert_eq!(facts.unk_id, tok.token_to_id("[UNK]"));
        let sentence = "Schwarzenegger visited Kraków.";
        let enc = &encode_single(&tok, sentence, None).unwrap()[0];
        let tokens = token_views(enc, &tok);
        let scores = vec![row(1, 0.5); tokens.len()];
        let pre = gather_pre_entities(sentence, &tokens, &scores, facts);
        let id2label = labels();
        let join = |t: &[String]| tokens_to_string(&tok, t);
        let out = aggregate(
            &pre,
            AggregationStrategy::First,
            &Labels {
                id2label: &id2label,
                join: &join,
            },
        );
        // All B-PER: each word is its own group; words are decoded, spans cover whole words.
        let words: Vec<_> = out
            .iter()
            .map(|e| match e {
                Entity::Group {
                    word, start, end, ..
                } => (word.as_str(), *start, *end),
                Entity::Token { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(
            words,
            [
                ("schwarzenegger", 0, 14),
                ("visited", 15, 22),
                ("krakow", 23, 29),
                (".", 29, 30)
            ]
        );
    }
}
