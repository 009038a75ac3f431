"""The built-in sentence set: calibration data and evaluation set for the demo and the CLI.

Hand-written, grouped by topic so that every sentence has plausible nearest
neighbours (the demo's top-1 agreement is only meaningful if neighbours are
not ties), and varied in length, from three words to long compound sentences,
so that padding and long sequences are both exercised. Topics are mixed on
purpose: a quantized model that collapses distinctions between domains shows
up as nearest-neighbour disagreement.
"""

from __future__ import annotations

from collections.abc import Sequence

_TOPICS: dict[str, tuple[str, ...]] = {
    "cooking": (
        "Preheat the oven to 220 degrees before the bread goes in.",
        "She folded the egg whites gently into the chocolate batter.",
        "A pinch of salt makes caramel taste sweeter, not saltier.",
        "Simmer the tomato sauce for at least forty minutes.",
        "Knead the dough until it springs back when you press it.",
        "Fresh basil should be torn by hand rather than chopped.",
        "Risotto needs constant stirring and warm stock added a ladle at a time.",
        "The recipe calls for two cups of flour and a teaspoon of baking soda.",
        "Let the steak rest for five minutes so the juices settle.",
        "Soup again?",
        "My grandmother never measured anything; she cooked by smell and memory.",
        "Roasting the garlic turns it soft, sweet and spreadable.",
        "Sourdough starter has to be fed every day or it goes sour and flat.",
        "Chop the onions finely and sweat them in butter without letting them brown.",
        "If the custard curdles, blend it quickly while it is still warm.",
        "Dinner is ready.",
        "A sharp knife is safer than a dull one because it does not slip.",
        "Marinate the chicken overnight in yoghurt, lemon and cumin.",
    ),
    "weather": (
        "Heavy rain is expected across the northern region tomorrow afternoon.",
        "It is freezing outside.",
        "The forecast says sunny skies with a light breeze for the weekend.",
        "A thunderstorm knocked out power to thousands of homes last night.",
        "Fog delayed every morning flight at the airport.",
        "Temperatures will drop sharply after the cold front passes through.",
        "The hurricane strengthened to category four as it approached the coast.",
        "Snow is piling up on the mountain passes, and chains are required.",
        "What a beautiful spring morning.",
        "Humidity makes the summer heat feel much worse than the thermometer says.",
        "Drought has left the reservoirs at their lowest level in decades.",
        "Bring an umbrella; the clouds look heavy.",
        "Hail the size of golf balls damaged cars in the parking lot.",
        "Meteorologists track pressure systems to predict where storms will form.",
        "The wind was so strong that it bent the old oak tree nearly in half.",
        "Frost covered the windshield when I left for work.",
    ),
    "sports": (
        "The striker scored twice in the final ten minutes to win the match.",
        "She broke the national record in the 400 metre hurdles.",
        "The team traded its star pitcher before the deadline.",
        "Marathon runners need to train for months before race day.",
        "He missed the penalty kick and the crowd went silent.",
        "Tennis players switch sides after every odd-numbered game.",
        "The referee showed a red card for a dangerous tackle.",
        "Basketball practice starts at six in the morning.",
        "Our cycling club rides eighty kilometres every Sunday.",
        "Goal!",
        "The underdogs upset the defending champions in overtime.",
        "Swimmers shave seconds off their times by improving their turns.",
        "The coach was fired after a run of seven straight losses.",
        "Chess is considered a sport by the International Olympic Committee.",
        "He tore a ligament in his knee during the first half.",
        "The ski jumper landed perfectly and took the gold medal.",
        "Cricket matches can last five days and still end in a draw.",
    ),
    "technology": (
        "The new phone has a faster processor and a larger battery.",
        "Restart your computer to finish installing the updates.",
        "Quantization shrinks neural networks by storing weights in eight bits.",
        "The database query timed out because the index was missing.",
        "Cloud storage lets you access your files from any device.",
        "The laptop overheats when I run more than two virtual machines.",
        "Open-source software is maintained by volunteers around the world.",
        "My password manager generates a unique password for every site.",
        "The compiler reported a type error on line forty-two.",
        "Wi-Fi is down again.",
        "Graphics cards are much faster than CPUs at large matrix multiplications.",
        "The startup released an app that translates speech in real time.",
        "Encrypt backups before uploading them to a shared server.",
        "Solid-state drives have no moving parts, so they are quieter and faster.",
        "The website crashed under the traffic of the product launch.",
        "Engineers rolled back the deployment after error rates spiked.",
        "Large language models are trained on enormous amounts of text.",
        "Please unplug the router, wait ten seconds and plug it back in.",
    ),
    "finance": (
        "The central bank raised interest rates by a quarter of a percentage point.",
        "Stock markets fell sharply after the inflation report.",
        "She pays off her credit card in full every month.",
        "Diversifying your investments reduces risk.",
        "The company reported record profits for the third quarter.",
        "Mortgage payments went up when the fixed rate ended.",
        "Money is tight this month.",
        "Bond yields move in the opposite direction to bond prices.",
        "The startup raised twenty million dollars in its second funding round.",
        "Keep receipts for every expense you plan to deduct from your taxes.",
        "The currency lost a third of its value against the dollar in a year.",
        "An emergency fund should cover three to six months of living costs.",
        "Shareholders voted against the proposed merger.",
        "Compound interest is what makes early saving so powerful.",
        "The bank froze the account after detecting suspicious transactions.",
        "Retail sales rose in December thanks to holiday shopping.",
    ),
    "health": (
        "Drink plenty of water and get some rest if you have a fever.",
        "Regular exercise lowers the risk of heart disease.",
        "The doctor prescribed antibiotics for the ear infection.",
        "My back hurts.",
        "Vaccines train the immune system to recognise a virus.",
        "A balanced diet includes vegetables, whole grains and protein.",
        "Sleep deprivation impairs memory and concentration.",
        "The patient was discharged from hospital after three days.",
        "Wash your hands before eating and after using the bathroom.",
        "High blood pressure often has no symptoms at all.",
        "Physical therapy helped him walk again after the accident.",
        "The clinic offers free flu shots every autumn.",
        "Chronic stress can weaken the body's defences against infection.",
        "She sprained her ankle while running down the stairs.",
        "Sunscreen should be reapplied every two hours at the beach.",
        "The nurse took my temperature and checked my pulse.",
        "Allergy season starts when the trees begin to pollinate.",
    ),
    "animals": (
        "The cat is sleeping on the windowsill in the sun.",
        "Dogs can recognise hundreds of words and gestures.",
        "Elephants mourn their dead and remember places for decades.",
        "A hummingbird's heart beats more than a thousand times a minute.",
        "The puppy chewed through my favourite pair of shoes.",
        "Octopuses can change colour and texture to hide from predators.",
        "Wolves hunt in packs and communicate by howling.",
        "Bees dance to tell each other where the flowers are.",
        "The zoo welcomed a baby giraffe this week.",
        "Look, a squirrel!",
        "Salmon swim upstream to spawn in the river where they hatched.",
        "Penguins huddle together to survive the Antarctic winter.",
        "Our parrot repeats every word the neighbours shout.",
        "Bats navigate in the dark using echoes of their own calls.",
        "The horse refused to jump the last fence.",
        "Feed the goldfish a small pinch of flakes twice a day.",
        "Sharks have existed for longer than trees.",
    ),
    "travel": (
        "Our flight to Lisbon was delayed by three hours.",
        "Remember to bring your passport and a copy of your visa.",
        "The hotel room had a balcony overlooking the harbour.",
        "We took the night train across the mountains.",
        "Is this seat taken?",
        "Pack light; you can buy whatever you forget when you arrive.",
        "The museum is closed on Mondays, so we went on Tuesday instead.",
        "Backpacking through South America taught me to speak Spanish.",
        "The rental car came with a full tank and a scratched bumper.",
        "Tourists crowded the bridge to photograph the sunset.",
        "Exchange some money before you leave the airport.",
        "The ferry to the island leaves every hour from the old pier.",
        "I lost my luggage somewhere between Frankfurt and Singapore.",
        "We hiked to the village and stayed with a local family.",
        "Travel insurance covered the cost of the cancelled trip.",
        "The border crossing took longer than the drive itself.",
        "Which platform does the train to Vienna leave from?",
    ),
    "music": (
        "She has been playing the violin since she was five.",
        "The concert sold out in less than ten minutes.",
        "This song always reminds me of our summer by the lake.",
        "The orchestra tuned up while the audience found their seats.",
        "Turn the music down, please.",
        "Jazz musicians often improvise long solos over a simple chord progression.",
        "He writes the lyrics and his sister composes the melodies.",
        "The band's first album was recorded in a garage.",
        "Practising scales is boring but it makes your fingers faster.",
        "The choir sang a lullaby in four-part harmony.",
        "Vinyl records are selling better than they have in decades.",
        "The drummer kept perfect time through the whole show.",
        "Learning to read sheet music opened up a whole new repertoire for me.",
        "The festival features bands from over thirty countries.",
        "An out-of-tune piano ruined the recital.",
        "Streaming services pay artists a fraction of a cent per play.",
    ),
    "science": (
        "Water boils at a lower temperature at high altitude.",
        "The telescope captured images of a galaxy billions of light years away.",
        "DNA carries the genetic instructions of every living organism.",
        "Light travels at about three hundred thousand kilometres per second.",
        "The experiment failed because the samples were contaminated.",
        "Photosynthesis converts sunlight, water and carbon dioxide into sugar.",
        "Black holes bend light so strongly that nothing escapes them.",
        "The periodic table arranges elements by their atomic number.",
        "Plate tectonics explains why earthquakes cluster along certain lines.",
        "Entropy always increases in an isolated system.",
        "Researchers sequenced the genome of an extinct woolly mammoth.",
        "Why is the sky blue?",
        "The vaccine trial enrolled thirty thousand volunteers.",
        "Neurons communicate through electrical and chemical signals.",
        "A hypothesis must be testable to count as scientific.",
        "The rover collected rock samples from an ancient Martian lake bed.",
        "Superconductors carry current with no resistance when cooled enough.",
    ),
    "history": (
        "The Roman Empire split into eastern and western halves.",
        "The printing press made books affordable for ordinary people.",
        "The Berlin Wall fell in November 1989.",
        "Ancient Egyptians built the pyramids as tombs for their kings.",
        "The Silk Road connected China with the Mediterranean for centuries.",
        "World War One began after the assassination of an archduke in Sarajevo.",
        "The Industrial Revolution moved millions of people from farms to cities.",
        "Medieval castles were built on hills so defenders could see attackers coming.",
        "The first humans walked on the Moon in 1969.",
        "Archaeologists uncovered a Viking longship buried in a field.",
        "The French Revolution abolished the monarchy and declared a republic.",
        "Who built Stonehenge, and why?",
        "The plague killed a third of Europe's population in the fourteenth century.",
        "Ancient Greek city-states each had their own laws and armies.",
        "The Magna Carta limited the power of the English king.",
        "Colonial empires redrew the borders of Africa with little regard for its peoples.",
    ),
    "work": (
        "The meeting has been moved to Thursday at ten.",
        "Please send me the report by the end of the day.",
        "She was promoted to team lead after two years.",
        "I am working from home today.",
        "The project deadline was pushed back by a month.",
        "Our manager encourages everyone to take their full holiday allowance.",
        "The interview went well, and they offered me the job on the spot.",
        "Open-plan offices make it hard to concentrate.",
        "He resigned to start his own consulting business.",
        "The quarterly review highlighted problems with customer support.",
        "Can we schedule a quick call to discuss the budget?",
        "New employees spend their first week shadowing a colleague.",
        "The union negotiated a four percent pay rise.",
        "Too many meetings leave no time for actual work.",
        "Her cover letter explained the gap in her employment history.",
        "The printer on the third floor is jammed again.",
    ),
    "home": (
        "The kitchen tap has been dripping all week.",
        "We painted the living room a pale shade of green.",
        "Take out the rubbish before the collection on Tuesday.",
        "The heating broke down in the middle of January.",
        "I finally assembled the bookshelf without any leftover screws.",
        "Moving house is one of the most stressful things you can do.",
        "The garden needs weeding after all this rain.",
        "Where did I leave my keys?",
        "Our landlord raised the rent again this year.",
        "Vacuum under the sofa; that is where the dust collects.",
        "The neighbours are renovating and the drilling starts at eight.",
        "We replaced the old windows to keep the house warmer.",
        "The washing machine leaked and flooded the bathroom floor.",
        "Lock the back door before you go to bed.",
        "A smoke alarm should be tested once a month.",
        "The children share a bedroom with bunk beds.",
    ),
    "education": (
        "The students handed in their essays on the causes of the war.",
        "Learning a second language is easier when you are young.",
        "The teacher explained fractions with slices of pizza.",
        "Exams start next Monday.",
        "University tuition fees have tripled in the last decade.",
        "She studied all night and still failed the chemistry test.",
        "Online courses let people learn at their own pace.",
        "The library extended its opening hours during exam season.",
        "Reading aloud to children improves their vocabulary.",
        "He is writing his thesis on the economics of renewable energy.",
        "The school cancelled classes because of the snow.",
        "Group projects teach cooperation, but one person usually does most of the work.",
        "Homework should reinforce what was taught in class, not replace it.",
        "The professor's lectures are recorded and posted online.",
        "Scholarships made it possible for her to attend medical school.",
        "What did you learn at school today?",
    ),
    "nature": (
        "The forest turns red and gold every October.",
        "A river carved this canyon over millions of years.",
        "Coral reefs are dying as the oceans grow warmer.",
        "The volcano erupted and covered the valley in ash.",
        "Wildflowers bloom across the meadow in early June.",
        "Glaciers are retreating faster than scientists predicted.",
        "The tide comes in twice a day.",
        "Mushrooms appear on the forest floor after autumn rain.",
        "Deserts can be scorching by day and freezing at night.",
        "The waterfall is loudest in spring when the snow melts.",
        "Rainforests produce a large share of the planet's oxygen.",
        "Stars are easier to see far from city lights.",
        "The lake froze solid and people skated on it for weeks.",
        "Wind has shaped these sandstone arches over thousands of years.",
        "Moss grows on the north side of the trees here.",
        "A sudden landslide blocked the mountain road.",
    ),
    "everyday": (
        "Thanks for your help yesterday.",
        "I will call you back in five minutes.",
        "Could you pass the salt, please?",
        "Sorry I am late; the bus never came.",
        "Happy birthday!",
        "Let us meet at the café on the corner around noon.",
        "I forgot to charge my phone last night.",
        "The queue at the post office went all the way out the door.",
        "Have you seen my glasses anywhere?",
        "We should catch up over coffee sometime soon.",
        "The supermarket has run out of bread again.",
        "It took me an hour to find a parking space downtown.",
        "My neighbour lent me his ladder so I could clean the gutters.",
        "Okay.",
        "Good night, and sleep well.",
        (
            "I am not sure whether I locked the front door when we left, so could we please go back and check "
            "before it gets dark?"
        ),
    ),
    "long": (
        (
            "Although the committee had spent months reviewing the proposal, the final decision was postponed "
            "once again because two members insisted that the environmental impact study had not considered the "
            "effect of increased traffic on the nearby wetlands."
        ),
        (
            "When the old bridge was finally closed for repairs, commuters who had crossed it every day for "
            "thirty years found themselves driving an extra forty minutes through narrow village roads that were "
            "never designed for heavy traffic."
        ),
        (
            "The novel follows three generations of a fishing family on a remote island, and it slowly reveals "
            "how a single storm in the winter of 1953 shaped every decision they made for the next sixty years."
        ),
        (
            "After the software update, the application started consuming twice as much memory as before, and the"
            " engineers eventually traced the leak to a cache that was never cleared when users logged out."
        ),
        (
            "If you want to grow tomatoes on a balcony, choose a sunny spot, use a large pot with good drainage, "
            "water deeply but not too often, and pinch out the side shoots so the plant puts its energy into "
            "fruit."
        ),
        (
            "The museum's new exhibition brings together paintings, letters and photographs that show how artists"
            " living in exile during the war kept in touch with one another and continued to influence each "
            "other's work."
        ),
        (
            "Despite warnings from economists that the policy would fuel inflation, the government went ahead "
            "with the tax cuts, arguing that stronger consumer spending would outweigh any short-term rise in "
            "prices."
        ),
        (
            "The hikers set off before dawn, crossed two rivers and a boulder field, and reached the summit just "
            "as the clouds cleared to reveal the whole range of snow-capped peaks stretching away to the horizon."
        ),
        (
            "In the first year of the study, researchers followed more than two thousand children from birth, "
            "recording their diet, sleep, language development and the amount of time they spent outdoors every "
            "week."
        ),
        (
            "She explained, patiently and more than once, that the form had to be signed by both tenants, "
            "witnessed by someone outside the household and returned to the council within fourteen days of the "
            "original notice."
        ),
        (
            "Our little bakery opens at six, and by the time the first customers arrive the shelves are full of "
            "croissants, rye loaves, cinnamon buns and the seeded rolls that the builders from the site next door"
            " always ask for."
        ),
        (
            "Because the telescope sits above most of the atmosphere, it can observe infrared light from the "
            "earliest galaxies, which was stretched by the expansion of the universe during its journey of more "
            "than thirteen billion years."
        ),
    ),
}

SENTENCES: tuple[str, ...] = tuple(sentence for group in _TOPICS.values() for sentence in group)
"""Every built-in sentence, topic by topic (a fixed order, so runs are comparable)."""

TOPICS: tuple[str, ...] = tuple(_TOPICS)


def _spread(n: int, total: int) -> list[int]:
    """`n` indices spread evenly over range(total) (all of them when n >= total)."""
    if n <= 0:
        return []
    if n >= total:
        return list(range(total))
    stride = total / n
    return [int(i * stride) for i in range(n)]


def sample_sentences(n: int, sentences: Sequence[str] = SENTENCES) -> list[str]:
    """`n` of `sentences` (default: the built-in set), spread evenly over it: calibration and evaluation sets.

    Taking every k-th sentence instead of the first `n` keeps a small
    calibration set as varied as the whole one (the built-in set is ordered
    by topic).
    """
    return [sentences[i] for i in _spread(n, len(sentences))]


def split_sentences(n: int, sentences: Sequence[str] = SENTENCES) -> tuple[list[str], list[str]]:
    """(`sample_sentences(n, sentences)`, every other sentence): a calibration set and the sentences held out."""
    chosen = set(_spread(n, len(sentences)))
    return ([sentences[i] for i in sorted(chosen)],
            [s for i, s in enumerate(sentences) if i not in chosen])
