//! The invoices as the operator reads them: a table per customer, or one JSON object per
//! customer and line.

use super::{
    book::Book,
    calendar::Month,
    invoice::{BillingError, Invoice, invoice},
    prices::Prices,
};

/// How `bill` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    /// One JSON object per line, per customer.
    Json,
}

/// Everything `billing invoice` prints: the invoices of `month` (for `customer` only, if
/// given) rendered in `format`.
pub fn bill(
    book: &Book,
    prices: &Prices,
    month: Month,
    customer: Option<&str>,
    format: Format,
) -> Result<String, BillingError> {
    let invoices = invoice(book, prices, month, customer)?;
    Ok(match format {
        Format::Json => json(&invoices),
        Format::Text if invoices.is_empty() => {
            format!("no invoice for {month}: no customer has a fee or a warning\n")
        }
        Format::Text => invoices.iter().map(text).collect::<Vec<_>>().join("\n"),
    })
}

/// One compact JSON object per line.
pub fn json(invoices: &[Invoice]) -> String {
    invoices
        .iter()
        .map(|invoice| serde_json::to_string(invoice).map(|line| line + "\n"))
        .collect::<Result<String, _>>()
        .unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}\n"))
}

/// The invoice as a table: a header, its lines, the sums, then its warnings.
pub fn text(invoice: &Invoice) -> String {
    let mut out = format!(
        "invoice {} ({}) for {}: issued {}, due {}\n",
        invoice.customer, invoice.name, invoice.month, invoice.issued, invoice.due
    );
    if let Some(bill_to) = &invoice.bill_to {
        out += &format!("bill to: {bill_to} (Art. 14)\n");
    }
    let mut rows: Vec<[String; 4]> =
        vec![["article", "contract", "item", "amount"].map(String::from)];
    rows.extend(invoice.lines.iter().map(|line| {
        [
            line.article.clone(),
            line.contract.clone(),
            line.item.clone(),
            yen(line.amount),
        ]
    }));
    for (label, amount) in [
        ("subtotal", invoice.subtotal),
        ("tax", invoice.tax),
        ("total", invoice.total),
    ] {
        rows.push([String::new(), String::new(), label.to_string(), yen(amount)]);
    }
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2), width(3)];
    for row in &rows {
        let line = format!(
            "{:<a$}  {:<c$}  {:<i$}  {:>m$}",
            row[0],
            row[1],
            row[2],
            row[3],
            a = widths[0],
            c = widths[1],
            i = widths[2],
            m = widths[3]
        );
        out += line.trim_end();
        out.push('\n');
    }
    for warning in &invoice.warnings {
        out += &format!("warning: {warning}\n");
    }
    out
}

/// Yen with thousands separators: `-2,133`.
fn yen(amount: i64) -> String {
    let digits = amount.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if amount < 0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yen_is_grouped_by_thousands() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (-2133, "-2,133"),
            (1_234_567, "1,234,567"),
        ];
        for (amount, text) in cases {
            assert_eq!(yen(amount), text);
        }
    }
}
