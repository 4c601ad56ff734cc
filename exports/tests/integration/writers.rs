use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use moat_exports::table::neutralize_formula;
use moat_exports::trl::TrlJsonlWriter;
use moat_exports::{Choice, Container, ExportOptions, Format, RecordWriter};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::{export, hh_records, SharedBuffer};

fn options(container: Container, conversational: bool) -> ExportOptions {
    ExportOptions {
        container,
        conversational,
        ..Default::default()
    }
}

fn jsonl_rows(bytes: &[u8]) -> Vec<serde_json::Map<String, Value>> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|line| match serde_json::from_str(line).unwrap() {
            Value::Object(object) => object,
            other => panic!("not an object: {other}"),
        })
        .collect()
}

#[test]
fn generic_trl_writer_is_byte_identical_to_the_original_trl_jsonl_writer() {
    let records = hh_records(60);
    let buffer = SharedBuffer::default();
    let mut original: Box<TrlJsonlWriter<SharedBuffer>> =
        Box::new(TrlJsonlWriter::new(buffer.clone()));
    for record in &records {
        original.write_record(record).unwrap();
    }
    let original_summary = original.finish().unwrap();
    let (generic, summary) = export(Format::Trl, &ExportOptions::default(), &records);
    assert_eq!(
        String::from_utf8(generic).unwrap(),
        String::from_utf8(buffer.bytes()).unwrap()
    );
    assert_eq!(summary, original_summary);
}

#[test]
fn row_counts_per_format_follow_the_choices() {
    let records = hh_records(100);
    let count = |choice: Choice| {
        records
            .iter()
            .filter(|record| record.choice == choice)
            .count() as u64
    };
    let (decided, ties, both_bad) = (
        count(Choice::Left) + count(Choice::Right),
        count(Choice::Tie),
        count(Choice::BothBad),
    );
    assert!(
        ties > 0 && both_bad > 0,
        "the sample must contain ties and both-bad votes"
    );
    let expected: BTreeMap<Format, u64> = [
        (Format::Trl, decided),
        (Format::Dpo, decided),
        (Format::Kto, 2 * (decided + both_bad)),
        (Format::HhRlhf, decided),
        (Format::OpenAi, decided),
        (Format::Arena, records.len() as u64),
        (Format::Votes, records.len() as u64),
    ]
    .into();
    for (format, rows) in expected {
        for container in [Container::Jsonl, Container::Csv, Container::Parquet] {
            let (bytes, summary) = export(format, &options(container, false), &records);
            assert_eq!(summary.rows_written, rows, "{format} {container:?}");
            if container == Container::Jsonl {
                assert_eq!(jsonl_rows(&bytes).len() as u64, rows, "{format}");
            }
        }
    }
}

#[test]
fn every_format_and_container_is_deterministic() {
    let records = hh_records(50);
    for format in Format::ALL {
        for container in [Container::Jsonl, Container::Csv, Container::Parquet] {
            for conversational in [false, true] {
                let options = options(container, conversational);
                assert_eq!(
                    export(format, &options, &records).0,
                    export(format, &options, &records).0,
                    "{format} {container:?}"
                );
            }
        }
    }
}

#[test]
fn formats_have_the_columns_their_readers_expect() {
    let records = hh_records(20);
    let keys = |format: Format, conversational: bool| -> Vec<String> {
        let (bytes, _) = export(format, &options(Container::Jsonl, conversational), &records);
        jsonl_rows(&bytes)[0].keys().cloned().collect()
    };
    // serde_json's Map is sorted by key unless preserve_order is on; compare as sets.
    let set = |names: &[&str]| -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(
        keys(Format::Dpo, false),
        set(&["prompt", "chosen", "rejected"])
    );
    assert_eq!(
        keys(Format::Kto, true),
        set(&["prompt", "completion", "label"])
    );
    assert_eq!(keys(Format::HhRlhf, false), set(&["chosen", "rejected"]));
    assert_eq!(
        keys(Format::OpenAi, false),
        set(&["input", "preferred_output", "non_preferred_output"])
    );
    assert_eq!(
        keys(Format::Arena, false),
        set(&[
            "question_id",
            "model_a",
            "model_b",
            "winner",
            "judge",
            "conversation_a",
            "conversation_b",
            "turn",
            "anony",
            "language",
            "tstamp"
        ])
    );
    assert_eq!(keys(Format::Votes, false).len(), 24);
}

#[test]
fn row_contents_of_each_format() {
    let records = hh_records(3);
    let record = &records[0];
    assert_eq!(record.choice, Choice::Left);
    let first = |format: Format, conversational: bool| {
        let (bytes, _) = export(format, &options(Container::Jsonl, conversational), &records);
        Value::Object(jsonl_rows(&bytes).remove(0))
    };
    let conversational = first(Format::Trl, true);
    assert_eq!(
        conversational["prompt"],
        serde_json::to_value(&record.conversation).unwrap()
    );
    assert_eq!(
        conversational["chosen"],
        serde_json::json!([{"role": "assistant", "content": record.left_response}])
    );
    let hh = first(Format::HhRlhf, false);
    let chosen = hh["chosen"].as_str().unwrap();
    assert!(chosen.starts_with(
        "\n\nHuman: what are some pranks with a pen i can do?\n\nAssistant: Are you looking"
    ));
    assert!(chosen.ends_with(&format!("\n\nAssistant: {}", record.left_response)));
    let openai = first(Format::OpenAi, false);
    assert_eq!(openai["input"]["messages"][0]["role"], "user");
    assert_eq!(openai["preferred_output"][0]["role"], "assistant");
    assert_eq!(
        openai["non_preferred_output"][0]["content"],
        record.right_response.as_str()
    );
    let arena = first(Format::Arena, false);
    assert_eq!(arena["winner"], "model_a");
    assert_eq!(arena["model_a"], record.left_model.as_str());
    assert_eq!(arena["turn"], 3);
    assert_eq!(arena["anony"], true);
    assert_eq!(
        arena["tstamp"].as_f64().unwrap(),
        record.created_ms as f64 / 1000.0
    );
    assert_eq!(
        arena["conversation_b"].as_array().unwrap().last().unwrap()["content"],
        record.right_response.as_str()
    );
    let kto = first(Format::Kto, false);
    assert_eq!(kto["label"], true);
    assert_eq!(kto["completion"], record.left_response.as_str());
}

#[test]
fn votes_csv_has_a_header_and_one_record_per_vote_with_every_field() {
    let records = hh_records(30);
    let (bytes, _) = export(Format::Votes, &options(Container::Csv, false), &records);
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(headers.len(), 24);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), records.len());
    let column = |name: &str| headers.iter().position(|header| header == name).unwrap();
    for (row, record) in rows.iter().zip(&records) {
        assert_eq!(
            row[column("left_response")],
            *neutralize_formula(&record.left_response)
        );
        assert_eq!(row[column("choice")], *record.choice.as_str());
        assert_eq!(
            row[column("rationale")],
            *neutralize_formula(record.rationale.as_deref().unwrap_or_default())
        );
        assert_eq!(
            row[column("completion_code")],
            *record.completion_code.as_deref().unwrap_or_default()
        );
        let conversation: Vec<moat_exports::Message> =
            serde_json::from_str(&row[column("conversation")]).unwrap();
        assert_eq!(conversation, record.conversation);
    }
}

/// OWASP's CSV injection: a rationale (or any text a rater or model wrote) that a spreadsheet would
/// run as a formula is written with a leading `'`; JSON Lines keeps the text as it was.
#[test]
fn csv_cells_that_look_like_formulas_are_neutralized() {
    let mut records = hh_records(4);
    let hostile = [
        "=HYPERLINK(\"http://evil\",\"x\")",
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1:A9)",
        "\tindented",
        "\rcarriage",
    ];
    records[0].rationale = Some(hostile[0].to_string());
    records[1].left_response = hostile[1].to_string();
    records[2].rationale = Some(hostile[2].to_string());
    records[3].right_response = hostile[3].to_string();
    records[0].right_response = hostile[4].to_string();
    records[1].rationale = Some(hostile[5].to_string());
    let (bytes, _) = export(Format::Votes, &options(Container::Csv, false), &records);
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|header| header == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        &rows[0][column("rationale")],
        "'=HYPERLINK(\"http://evil\",\"x\")"
    );
    assert_eq!(&rows[1][column("left_response")], "'+1+cmd|' /C calc'!A0");
    assert_eq!(&rows[2][column("rationale")], "'-2+3");
    assert_eq!(&rows[3][column("right_response")], "'@SUM(A1:A9)");
    assert_eq!(&rows[0][column("right_response")], "'\tindented");
    assert_eq!(&rows[1][column("rationale")], "'\rcarriage");
    for row in &rows {
        for field in row {
            assert!(
                !field.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a field a spreadsheet would run: {field:?}"
            );
        }
    }
    // Other formats keep the text exactly: the neutralizing is for spreadsheets only.
    let (jsonl, _) = export(Format::Votes, &options(Container::Jsonl, false), &records);
    assert_eq!(jsonl_rows(&jsonl)[0]["rationale"], hostile[0]);
    assert_eq!(neutralize_formula("plain text"), "plain text");
    assert_eq!(neutralize_formula(""), "");
}

#[test]
fn parquet_reads_back_with_the_stable_schema_and_bounded_batches() {
    // More rows than one Arrow batch, so the file has several batches.
    let records = hh_records(2307);
    let (bytes, summary) = export(Format::Votes, &options(Container::Parquet, false), &records);
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
    let schema = reader.schema().clone();
    assert_eq!(
        schema.field_with_name("created_ms").unwrap().data_type(),
        &DataType::Int64
    );
    assert!(schema
        .field_with_name("source_confidence")
        .unwrap()
        .is_nullable());
    let DataType::List(item) = schema.field_with_name("conversation").unwrap().data_type() else {
        panic!("not a list")
    };
    assert!(
        matches!(item.data_type(), DataType::Struct(fields) if fields.len() == 2 && fields[0].name() == "role")
    );
    let mut rows = 0;
    let mut first_choice = None;
    for batch in reader.build().unwrap() {
        let batch = batch.unwrap();
        if first_choice.is_none() {
            first_choice = Some(
                batch
                    .column_by_name("choice")
                    .unwrap()
                    .as_string::<i32>()
                    .value(0)
                    .to_string(),
            );
            let confidence = batch.column_by_name("source_confidence").unwrap();
            assert!(confidence.is_null(0) && !confidence.is_null(1));
        }
        rows += batch.num_rows();
    }
    assert_eq!(rows as u64, summary.rows_written);
    assert_eq!(rows, records.len());
    assert_eq!(first_choice.as_deref(), Some(records[0].choice.as_str()));
}

#[test]
fn openai_input_is_a_struct_of_messages_in_parquet() {
    let records = hh_records(10);
    let (bytes, _) = export(
        Format::OpenAi,
        &options(Container::Parquet, false),
        &records,
    );
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
    let DataType::Struct(fields) = reader
        .schema()
        .field_with_name("input")
        .unwrap()
        .data_type()
        .clone()
    else {
        panic!("input is not a struct")
    };
    assert_eq!(fields[0].name(), "messages");
}

#[test]
fn format_and_container_names_parse_back() {
    for format in Format::ALL {
        assert_eq!(Format::parse(format.as_str()), Some(format));
    }
    assert_eq!(Format::parse("HH"), Some(Format::HhRlhf));
    assert_eq!(Format::parse("sharegpt"), None);
    for container in [Container::Jsonl, Container::Csv, Container::Parquet] {
        assert_eq!(Container::parse(container.as_str()), Some(container));
    }
    assert_eq!(
        Format::Trl.file_name("test", Container::Parquet),
        "trl-test.parquet"
    );
}

#[test]
fn parquet_bytes_do_not_depend_on_the_number_of_encoding_threads() {
    use moat_exports::table::{Cell, ParquetCompression, ParquetSink, TableSink, Turns};
    let records = hh_records(5000);
    let columns = Format::Arena.columns(false);
    let write = |threads: usize| {
        let buffer = SharedBuffer::default();
        let sink = ParquetSink::new(
            &columns,
            Box::new(buffer.clone()),
            ParquetCompression::Snappy,
        )
        .unwrap();
        let mut sink: Box<dyn TableSink> = Box::new(sink.with_threads(threads));
        for record in &records {
            sink.write_row(&[
                Cell::text(&record.prompt_id),
                Cell::text(&record.left_model),
                Cell::text(&record.right_model),
                Cell::text("tie"),
                Cell::text(&record.rater),
                Cell::Messages(Turns::with_reply(
                    &record.conversation,
                    "assistant",
                    &record.left_response,
                )),
                Cell::Messages(Turns::of(&record.conversation)),
                Cell::Int(1),
                Cell::Bool(false),
                Cell::OptionalText(None),
                Cell::Float(0.5),
            ])
            .unwrap();
        }
        sink.finish().unwrap();
        buffer.bytes()
    };
    let one = write(1);
    assert_eq!(one, write(3));
    assert_eq!(&one[..4], b"PAR1");
}

#[test]
fn json_escaping_matches_serde_json_byte_for_byte() {
    // Every control character, quotes, backslashes, DEL, multi-byte characters and plain ASCII, at
    // every position relative to the eight-byte words the escaper scans.
    let alphabet: Vec<char> = (0u32..0x20)
        .filter_map(char::from_u32)
        .chain([
            '"', '\\', '/', '\u{7f}', 'a', 'Z', ' ', 'é', '→', '😀', '\u{2028}',
        ])
        .collect();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut checked = 0;
    for length in 0..48 {
        for _ in 0..200 {
            let text: String = (0..length)
                .map(|_| {
                    // Mostly plain text, so clean eight-byte words occur too.
                    if next() % 4 == 0 {
                        alphabet[(next() % alphabet.len() as u64) as usize]
                    } else {
                        char::from(b'a' + (next() % 26) as u8)
                    }
                })
                .collect();
            let mut ours = Vec::new();
            moat_exports::table::json_string(&mut ours, &text);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&text).unwrap(),
                "{text:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 48 * 200);
}

/// A multi-turn arena battle (each side's earlier answers and the follow-ups in its history): the
/// whole conversation in every format that can hold it, read back by the arena and votes readers.
#[test]
fn multi_turn_battles_keep_the_whole_conversation_and_read_back() {
    use moat_exports::import::{ImportFormat, ImportReader};
    use moat_exports::Message;
    let mut record = hh_records(1).remove(0);
    record.conversation = vec![Message::new("user", "What is the capital of France?")];
    record.left_history = vec![
        Message::new("assistant", "Paris."),
        Message::new("user", "How old is it?"),
    ];
    record.right_history = vec![
        Message::new("assistant", "It is Paris."),
        Message::new("user", "How old is it?"),
    ];
    record.left_response = "Over two thousand years.".into();
    record.right_response = "Very old.".into();
    record.choice = Choice::Left;
    let text = |format: Format, conversational: bool| {
        let (bytes, summary) = export(
            format,
            &options(Container::Jsonl, conversational),
            std::slice::from_ref(&record),
        );
        (String::from_utf8(bytes).unwrap(), summary)
    };
    let (hh, _) = text(Format::HhRlhf, false);
    let hh: Value = serde_json::from_str(hh.trim()).unwrap();
    assert_eq!(
        hh["chosen"],
        "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.\n\nHuman: How old is it?\n\nAssistant: Over two thousand years."
    );
    let (trl, _) = text(Format::Trl, false);
    let trl: Value = serde_json::from_str(trl.trim()).unwrap();
    assert_eq!(trl["prompt"], "user: What is the capital of France?");
    assert_eq!(
        trl["chosen"],
        "assistant: Paris.\n\nuser: How old is it?\n\nassistant: Over two thousand years."
    );
    let (openai, summary) = text(Format::OpenAi, false);
    assert_eq!((openai.as_str(), summary.skipped_multi_turn), ("", 1));
    assert!(
        summary.to_string().contains("1 multi-turn battles"),
        "{summary}"
    );

    for format in [Format::Arena, Format::Votes] {
        let (written, _) = text(format, false);
        let import = match format {
            Format::Arena => ImportFormat::Arena,
            _ => ImportFormat::Votes,
        };
        let mut reader =
            ImportReader::new(import, Box::new(std::io::Cursor::new(written))).unwrap();
        let item = reader.next().unwrap().unwrap();
        assert_eq!(item.conversation, record.conversation, "{format}");
        assert_eq!(item.responses[0].history, record.left_history, "{format}");
        assert_eq!(item.responses[1].history, record.right_history, "{format}");
        assert_eq!(item.responses[0].text, record.left_response, "{format}");
        let back = item.vote_records("s", &|_| moat_exports::Openness::Open, &mut 1);
        assert!(back[0].is_multi_turn());
    }
}
